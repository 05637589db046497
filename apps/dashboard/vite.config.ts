import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';

/** `npm run dev` proxies to this server. */
const target = process.env.PULSE_DEV_SERVER ?? 'http://127.0.0.1:3000';
/** `vite preview` (the e2e's PULSE_E2E_UI=vite-preview mode) proxies to this server. */
const previewTarget = process.env.PULSE_API_TARGET ?? 'http://127.0.0.1:3000';

const proxyTo = (to: string) => ({
  '/api': { target: to, changeOrigin: false },
  '/ws': { target: to, ws: true, changeOrigin: false },
  // Server-Sent Events (the fallback of contract section 8): streamed through as it comes.
  '/sse': { target: to, changeOrigin: false },
  '/healthz': { target: to },
});

export default defineConfig({
  base: '/',
  plugins: [react()],
  server: {
    proxy: proxyTo(target),
  },
  preview: {
    proxy: proxyTo(previewTarget),
  },
  build: {
    outDir: 'dist',
    assetsDir: 'assets',
    emptyOutDir: true,
    sourcemap: false,
  },
});
