#!version:1.0.0.1
## ringedge common boot file: site settings only, no account.
include:config "y000000000{{modelHw}}.cfg"
overwrite_mode = 1
