import { useEffect, useRef } from 'react';
import { EditorView, basicSetup } from 'codemirror';
import { yaml } from '@codemirror/lang-yaml';
import { linter, lintGutter, Diagnostic } from '@codemirror/lint';
import { parseManifests } from './yamlapply';

// YamlEditor is CodeMirror 6 with YAML highlighting; syntax errors are
// underlined as they are typed (the same parse the page reports with line
// and column). The text is the caller's; the editor reports each change.
export function YamlEditor({ value, onChange }: { value: string; onChange: (v: string) => void }) {
  const host = useRef<HTMLDivElement>(null);
  const view = useRef<EditorView | null>(null);
  const changed = useRef(onChange);
  changed.current = onChange;
  useEffect(() => {
    const v = new EditorView({
      doc: value,
      parent: host.current!,
      extensions: [
        basicSetup,
        yaml(),
        lintGutter(),
        linter((ev) => parseManifests(ev.state.doc.toString()).errors.map((e): Diagnostic => ({
          from: Math.min(e.from, ev.state.doc.length), to: Math.min(e.to, ev.state.doc.length), severity: 'error', message: `line ${e.line}, column ${e.col}: ${e.message}`,
        })), { delay: 300 }),
        EditorView.updateListener.of((u) => { if (u.docChanged) changed.current(u.state.doc.toString()); }),
      ],
    });
    view.current = v;
    return () => v.destroy();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, []);
  // A value set from outside (a template picked) replaces the text.
  useEffect(() => {
    const v = view.current;
    if (v && v.state.doc.toString() !== value) v.dispatch({ changes: { from: 0, to: v.state.doc.length, insert: value } });
  }, [value]);
  return <div ref={host} className="yaml-editor" data-testid="yaml-editor" />;
}
