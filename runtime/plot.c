/* plot.c -- pictures the trainer writes: an SVG of training curves and grayscale PNGs.
 *
 * Both are written by hand (no plotting or image library): the SVG is a few dozen
 * lines of text, the PNG is signature + IHDR + one IDAT (zlib's compress) + IEND with
 * zlib's crc32.
 */
#include "cdl.h"

#include <errno.h>
#include <math.h>
#include <string.h>
#include <zlib.h>

/* ---------------------------------------------------------------- SVG */

typedef struct plot_panel {
    double x0, y0, w, h;               /* plot area in SVG units */
    double xmin, xmax, ymin, ymax;     /* data range */
} plot_panel;

static double plot_px(const plot_panel *p, double x) {
    return p->x0 + (x - p->xmin) / (p->xmax - p->xmin) * p->w;
}
static double plot_py(const plot_panel *p, double y) {
    return p->y0 + p->h - (y - p->ymin) / (p->ymax - p->ymin) * p->h;
}

/* A "nice" tick step (1, 2 or 5 times a power of ten) giving about n ticks. */
static double plot_step(double range, int n) {
    double raw = range / n, mag = pow(10, floor(log10(raw))), f = raw / mag;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * mag;
}

/* Fill the data range of p from the finite values of up to two series. */
static int plot_range(plot_panel *p, int n, const double *x, const double *a, const double *b) {
    int any = 0;
    p->ymin = INFINITY;
    p->ymax = -INFINITY;
    for (int i = 0; i < n; i++) {
        const double *s[2] = {a, b};
        for (int k = 0; k < 2; k++) {
            if (!s[k] || !isfinite(s[k][i])) continue;
            p->ymin = fmin(p->ymin, s[k][i]);
            p->ymax = fmax(p->ymax, s[k][i]);
            any = 1;
        }
    }
    p->xmin = n ? x[0] : 0;
    p->xmax = n ? x[n - 1] : 1;
    if (p->xmax <= p->xmin) p->xmax = p->xmin + 1;
    if (!any) p->ymin = 0, p->ymax = 1;
    double pad = (p->ymax - p->ymin) * 0.08;
    if (pad <= 0) pad = fabs(p->ymax) * 0.1 + 0.05;
    p->ymin -= pad;
    p->ymax += pad;
    return any;
}

/* Axes, grid, tick labels and the title of one panel. */
static void plot_axes(FILE *f, const plot_panel *p, const char *title, const char *xlabel) {
    fprintf(f, "<rect x='%.1f' y='%.1f' width='%.1f' height='%.1f' fill='white' stroke='#444'/>\n",
            p->x0, p->y0, p->w, p->h);
    double ys = plot_step(p->ymax - p->ymin, 5);
    for (double y = ceil(p->ymin / ys) * ys; y <= p->ymax; y += ys) {
        double py = plot_py(p, y);
        fprintf(f, "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='#ddd'/>\n", p->x0, py,
                p->x0 + p->w, py);
        fprintf(f, "<text x='%.1f' y='%.1f' text-anchor='end' font-size='11'>%.4g</text>\n",
                p->x0 - 5, py + 4, fabs(y) < ys * 1e-6 ? 0.0 : y);
    }
    double xs = plot_step(p->xmax - p->xmin, 8);
    if (xs < 1) xs = 1;
    for (double x = ceil(p->xmin / xs) * xs; x <= p->xmax + 1e-9; x += xs) {
        double px = plot_px(p, x);
        fprintf(f, "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='#444'/>\n", px,
                p->y0 + p->h, px, p->y0 + p->h + 4);
        fprintf(f, "<text x='%.1f' y='%.1f' text-anchor='middle' font-size='11'>%g</text>\n", px,
                p->y0 + p->h + 17, x);
    }
    fprintf(f, "<text x='%.1f' y='%.1f' text-anchor='middle' font-size='14'>%s</text>\n",
            p->x0 + p->w / 2, p->y0 - 10, title);
    fprintf(f, "<text x='%.1f' y='%.1f' text-anchor='middle' font-size='12'>%s</text>\n",
            p->x0 + p->w / 2, p->y0 + p->h + 34, xlabel);
}

/* One series as a polyline with dots; NaN points are skipped.  Legend row k. */
static void plot_series(FILE *f, const plot_panel *p, int n, const double *x, const double *y,
                        const char *color, const char *label, int k) {
    if (!y) return;
    int any = 0;
    for (int i = 0; i < n; i++) any |= isfinite(y[i]);
    if (!any) return;
    fprintf(f, "<polyline fill='none' stroke='%s' stroke-width='2' points='", color);
    for (int i = 0; i < n; i++)
        if (isfinite(y[i])) fprintf(f, "%.1f,%.1f ", plot_px(p, x[i]), plot_py(p, y[i]));
    fprintf(f, "'/>\n");
    for (int i = 0; i < n; i++)
        if (isfinite(y[i]))
            fprintf(f, "<circle cx='%.1f' cy='%.1f' r='3' fill='%s'><title>epoch %g: %.6g</title></circle>\n",
                    plot_px(p, x[i]), plot_py(p, y[i]), color, x[i], y[i]);
    double lx = p->x0 + p->w - 110, ly = p->y0 + 16 + 18 * k;
    fprintf(f, "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='%s' stroke-width='2'/>\n", lx,
            ly - 4, lx + 20, ly - 4, color);
    fprintf(f, "<text x='%.1f' y='%.1f' font-size='12'>%s</text>\n", lx + 26, ly, label);
}

/* Write the two-panel curve plot (see cdl.h) to path. */
int cdl_plot_svg(const char *path, const char *title, int n, const double *epoch,
                 const double *train_loss, const double *test_loss, const double *test_acc) {
    FILE *f = fopen(path, "w");
    if (!f) return cdl_fail("%s: cannot write plot: %s", path, strerror(errno));
    const double W = 960, H = 400;
    fprintf(f, "<?xml version='1.0' encoding='UTF-8'?>\n"
               "<svg xmlns='http://www.w3.org/2000/svg' width='%g' height='%g' "
               "viewBox='0 0 %g %g' font-family='sans-serif'>\n"
               "<rect width='100%%' height='100%%' fill='#fafafa'/>\n", W, H, W, H);
    fprintf(f, "<text x='%g' y='24' text-anchor='middle' font-size='16' font-weight='bold'>", W / 2);
    for (const char *c = title ? title : ""; *c; c++) {     /* escape the title */
        if (*c == '<') fputs("&lt;", f);
        else if (*c == '&') fputs("&amp;", f);
        else if (*c == '>') fputs("&gt;", f);
        else fputc(*c, f);
    }
    fprintf(f, "</text>\n");
    plot_panel lp = {70, 60, 370, 280, 0, 0, 0, 0}, ap = {550, 60, 370, 280, 0, 0, 0, 0};
    plot_range(&lp, n, epoch, train_loss, test_loss);
    plot_axes(f, &lp, "loss", "epoch");
    plot_series(f, &lp, n, epoch, train_loss, "#1f77b4", "train loss", 0);
    plot_series(f, &lp, n, epoch, test_loss, "#d62728", "test loss", 1);
    plot_range(&ap, n, epoch, test_acc, NULL);
    plot_axes(f, &ap, "test accuracy", "epoch");
    plot_series(f, &ap, n, epoch, test_acc, "#2ca02c", "test accuracy", 0);
    fprintf(f, "</svg>\n");
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) return cdl_fail("%s: write error", path);
    return 0;
}

/* ---------------------------------------------------------------- PNG */

static void png_be32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* One chunk: length, type, data, CRC-32 of type + data. */
static int png_chunk(FILE *f, const char type[4], const unsigned char *data, uint32_t len) {
    unsigned char hdr[8], crc[4];
    png_be32(hdr, len);
    memcpy(hdr + 4, type, 4);
    uLong c = crc32(0L, Z_NULL, 0);
    c = crc32(c, (const Bytef *)type, 4);
    if (len) c = crc32(c, data, len);
    png_be32(crc, (uint32_t)c);
    if (fwrite(hdr, 1, 8, f) != 8 || (len && fwrite(data, 1, len, f) != len) ||
        fwrite(crc, 1, 4, f) != 4)
        return -1;
    return 0;
}

int cdl_png_write_gray(const char *path, int w, int h, const unsigned char *pix) {
    if (w < 1 || h < 1 || w > (1 << 20) || h > (1 << 20) || (int64_t)w * h > (1 << 28))
        return cdl_fail("%s: bad PNG size %d x %d", path, w, h);
    size_t raw_n = (size_t)h * ((size_t)w + 1);             /* filter byte 0 per row */
    uLongf z_n = compressBound((uLong)raw_n);
    unsigned char *raw = cdl_alloc(raw_n), *z = cdl_alloc(z_n);
    if (!raw || !z) {
        cdl_free(raw);
        cdl_free(z);
        return cdl_fail("%s: out of memory for a %d x %d PNG", path, w, h);
    }
    for (int y = 0; y < h; y++) memcpy(raw + (size_t)y * ((size_t)w + 1) + 1, pix + (size_t)y * (size_t)w, (size_t)w);
    int zr = compress2(z, &z_n, raw, (uLong)raw_n, 9);
    cdl_free(raw);
    if (zr != Z_OK) {
        cdl_free(z);
        return cdl_fail("%s: zlib compress failed (%d)", path, zr);
    }
    FILE *f = fopen(path, "wb");
    if (!f) {
        cdl_free(z);
        return cdl_fail("%s: cannot write: %s", path, strerror(errno));
    }
    static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    unsigned char ihdr[13];
    png_be32(ihdr, (uint32_t)w);
    png_be32(ihdr + 4, (uint32_t)h);
    ihdr[8] = 8;      /* bit depth */
    ihdr[9] = 0;      /* grayscale */
    ihdr[10] = 0;     /* deflate */
    ihdr[11] = 0;     /* adaptive filtering, filter type per row */
    ihdr[12] = 0;     /* no interlace */
    int bad = fwrite(sig, 1, 8, f) != 8 || png_chunk(f, "IHDR", ihdr, 13) < 0 ||
              png_chunk(f, "IDAT", z, (uint32_t)z_n) < 0 || png_chunk(f, "IEND", NULL, 0) < 0;
    cdl_free(z);
    bad |= ferror(f);
    if (fclose(f) != 0 || bad) return cdl_fail("%s: write error", path);
    return 0;
}

int cdl_png_write_tiles(const char *path, const float *const *tiles, int n, int cols, int w, int h, int scale) {
    if (n < 1 || cols < 1 || w < 1 || h < 1 || scale < 1 || w > (1 << 16) || h > (1 << 16) || scale > 64)
        return cdl_fail("%s: bad tile grid (%d tiles, %d columns, %d x %d, scale %d)", path, n, cols, w, h, scale);
    int rows = (n + cols - 1) / cols, pad = 2 * scale, tw = w * scale, th = h * scale;
    int64_t W64 = (int64_t)cols * (tw + pad) + pad, H64 = (int64_t)rows * (th + pad) + pad;
    if (W64 > (1 << 20) || H64 > (1 << 20) || W64 * H64 > (1 << 28))
        return cdl_fail("%s: bad PNG size %lld x %lld", path, (long long)W64, (long long)H64);
    int W = (int)W64, H = (int)H64;
    unsigned char *pix = cdl_alloc((size_t)W * (size_t)H);
    if (!pix) return cdl_fail("%s: out of memory for a %dx%d image", path, W, H);
    memset(pix, 96, (size_t)W * (size_t)H);
    for (int t = 0; t < n; t++) {
        const float *img = tiles[t];
        if (!img) continue;
        int ox = pad + (t % cols) * (tw + pad), oy = pad + (t / cols) * (th + pad);
        for (int y = 0; y < th; y++)
            for (int x = 0; x < tw; x++) {
                float v = img[(y / scale) * w + x / scale];
                v = v == v ? (v < 0 ? 0 : v > 1 ? 1 : v) : 0;
                pix[(size_t)(oy + y) * (size_t)W + (size_t)(ox + x)] = (unsigned char)lrintf(v * 255);
            }
    }
    int rc = cdl_png_write_gray(path, W, H, pix);
    cdl_free(pix);
    return rc;
}
