// The bench's plots: the SVG line and bar plots of runtime/plot/svg.ts (shared with the trainer's
// loss curves).
export { barPlot, linePlot, type LinePlot, type Series } from '../runtime/plot/svg.js';
