// "You are caller number 3": the sounds that say a caller's place in the queue. Pure: the
// position in, the names of the shipped sounds (audio/queue-position.wav, audio/numbers/*.wav)
// out, for the media worker's play-sequence command. English numbers are composed the way they
// are said: 1-20 have their own word, 21-99 are a tens word followed by a units word
// ("twenty" "one"). Positions beyond MAX_SPOKEN_POSITION are not said (a queue that long on
// one appliance means something else is wrong; the caller still hears the prompt and music).
export const POSITION_SOUND = "queue-position";
export const MAX_SPOKEN_POSITION = 99;

/** The numbers with a file of their own in audio/numbers/. */
export const NUMBER_WORDS: readonly number[] = [...Array.from({ length: 20 }, (_, i) => i + 1), 30, 40, 50, 60, 70, 80, 90];

/** The worker's name of the sound saying `n` (one of NUMBER_WORDS). */
export function numberSound(n: number): string {
  return `number-${n}`;
}

/** The sounds saying a number from 1 to 99, in order; undefined outside that range. */
export function numberSounds(n: number): string[] | undefined {
  if (!Number.isInteger(n) || n < 1 || n > MAX_SPOKEN_POSITION) return undefined;
  if (n <= 20) return [numberSound(n)];
  const tens = n - (n % 10);
  return n % 10 === 0 ? [numberSound(tens)] : [numberSound(tens), numberSound(n % 10)];
}

/** "You are caller number" and the number: the sounds for position `n`, or [] when it is not said. */
export function positionSounds(n: number | undefined): string[] {
  const num = n === undefined ? undefined : numberSounds(n);
  return num === undefined ? [] : [POSITION_SOUND, ...num];
}

/** Sound name → shipped WAV file (`shipped` resolves a name under audio/), for the media worker. */
export function positionSoundFiles(shipped: (name: string) => string): Record<string, string> {
  const out: Record<string, string> = { [POSITION_SOUND]: shipped("queue-position.wav") };
  for (const n of NUMBER_WORDS) out[numberSound(n)] = shipped(`numbers/${n}.wav`);
  return out;
}
