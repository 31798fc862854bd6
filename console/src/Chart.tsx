import { useEffect, useRef } from 'react';
import { Chart, BarController, BarElement, CategoryScale, LinearScale, Tooltip } from 'chart.js';

Chart.register(BarController, BarElement, CategoryScale, LinearScale, Tooltip);

// BarChart draws one series of bars with Chart.js.
export function BarChart({ labels, values, label }: { labels: string[]; values: number[]; label: string }) {
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
  return <div style={{ height: '14rem' }}><canvas ref={canvas} /></div>;
}
