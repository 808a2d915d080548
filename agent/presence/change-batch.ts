// Resources whose state changed while one turn of the event loop ran, notified once each at the
// next turn: a call that rings ten phones and is answered changes the same lamps several times
// in one go, and each watcher should get one NOTIFY with the state at the end, not one per step.
// Shared by the dialog (BLF) and message-summary (MWI) notifiers.
export class ChangeBatch {
  private readonly pending = new Set<string>();
  private scheduled: NodeJS.Immediate | undefined;

  /** flushOne: called once per resource marked since the last flush. */
  constructor(private readonly flushOne: (resource: string) => void) {}

  mark(resources: Iterable<string>): void {
    for (const r of resources) this.pending.add(r);
    if (this.pending.size > 0) this.scheduled ??= setImmediate(() => this.flush());
  }

  /** Forgets what is pending (the notifier stops). */
  clear(): void {
    if (this.scheduled !== undefined) clearImmediate(this.scheduled);
    this.scheduled = undefined;
    this.pending.clear();
  }

  private flush(): void {
    this.scheduled = undefined;
    const resources = [...this.pending];
    this.pending.clear();
    for (const r of resources) this.flushOne(r);
  }
}
