#!version:1.0.0.1
## ringedge boot file for {{MAC}} ({{modelLabel}}): the files to load, in order.
include:config "y000000000{{modelHw}}.cfg"
include:config "{{mac}}.cfg"
overwrite_mode = 1
