import { useEffect, useRef } from 'react';
import { Chart, BarController, BarElement, CategoryScale, LinearScale, Tooltip, Legend, LineController, LineElement, PointElement } from 'chart.js';

Chart.register(BarController, BarElement, CategoryScale, LinearScale, Tooltip, Legend, LineController, LineElement, PointElement);

// BarChart draws one series of bars with Chart.js.
export function BarChart({ labels, values, label, testid }: { labels: string[]; values: number[]; label: string; testid?: string }) {
  const canvas = useRef<HTMLCanvasElement>(null);
  const chart = useRef<Chart | null>(null);
  useEffect(() => {
    if (!canvas.current) return;
    chart.current = new Chart(canvas.current, {
      type: 'bar',
      data: { labels, datasets: [{ label, data: values, backgroundColor: '#3d6fd8' }] },
      options: { animation: false, responsive: true, maintainAspectRatio: false },
    });
    return () => chart.current?.destroy();
  }, [labels.join('|'), values.join('|'), label]);
  return <div style={{ height: '14rem' }} data-testid={testid}><canvas ref={canvas} /></div>;
}

export interface Line { label: string; values: number[]; color: string; dashed?: boolean }

// LineChart draws series over the same labels (request and limit as flat
// lines beside the samples). A series of NaN (no limit set) is left out.
export function LineChart({ labels, lines, unit, testid }: { labels: string[]; lines: Line[]; unit: string; testid?: string }) {
  const canvas = useRef<HTMLCanvasElement>(null);
  const chart = useRef<Chart | null>(null);
  const shown = lines.filter((l) => l.values.some((v) => !Number.isNaN(v)));
  useEffect(() => {
    if (!canvas.current) return;
    chart.current = new Chart(canvas.current, {
      type: 'line',
      data: {
        labels,
        datasets: shown.map((l) => ({ label: l.label, data: l.values, borderColor: l.color, backgroundColor: l.color, borderDash: l.dashed ? [6, 4] : [], pointRadius: l.dashed ? 0 : 2, borderWidth: 2 })),
      },
      options: { animation: false, responsive: true, maintainAspectRatio: false, scales: { y: { beginAtZero: true, title: { display: true, text: unit } } } },
    });
    return () => chart.current?.destroy();
  }, [labels.join('|'), JSON.stringify(shown), unit]);
  return <div style={{ height: '12rem' }} data-testid={testid}><canvas ref={canvas} /></div>;
}
