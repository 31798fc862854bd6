// The log view's model: lines kept in an array (a long log is tens of
// thousands of lines; the page draws only those in view) and the window
// of rows a scroll position shows.

export class LineBuffer {
  lines: string[] = [];
  private rest = '';
  constructor(public max = 200000) {}
  // push adds a chunk of text; a line cut at the chunk's end waits for the rest.
  push(chunk: string): number {
    const parts = (this.rest + chunk).split('\n');
    this.rest = parts.pop() ?? '';
    for (const p of parts) this.lines.push(p);
    const over = this.lines.length - this.max;
    if (over > 0) this.lines.splice(0, over);
    return parts.length;
  }
  // all is the text with the unfinished last line.
  all(): string[] {
    return this.rest ? [...this.lines, this.rest] : this.lines;
  }
  clear() {
    this.lines = [];
    this.rest = '';
  }
}

// visibleRange is the rows [start, end) to draw for a viewport, with
// `overscan` rows more on each side so a fast scroll shows no gap.
export function visibleRange(scrollTop: number, height: number, rowHeight: number, count: number, overscan = 20): [number, number] {
  const first = Math.floor(Math.max(0, scrollTop) / rowHeight);
  const start = Math.min(count, Math.max(0, first - overscan));
  const end = Math.min(count, first + Math.ceil(height / rowHeight) + overscan);
  return [start, Math.max(start, end)];
}

// matching is the indices of the lines that contain the search text
// (case-insensitive); all of them when it is empty.
export function matching(lines: string[], search: string): number[] | null {
  if (!search) return null;
  const s = search.toLowerCase();
  const out: number[] = [];
  for (let i = 0; i < lines.length; i++) if (lines[i].toLowerCase().includes(s)) out.push(i);
  return out;
}
