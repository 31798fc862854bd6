/// <reference types="vitest" />
import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';

// The build goes into the Go package that embeds it (internal/console/dist);
// `make console` empties it first, keeping the .gitkeep that lets `go build`
// work before any build.
export default defineConfig({
  plugins: [react()],
  build: {
    outDir: '../internal/console/dist',
    emptyOutDir: false,
    chunkSizeWarningLimit: 1500,
  },
  test: {
    include: ['src/**/*.test.ts'],
  },
});
