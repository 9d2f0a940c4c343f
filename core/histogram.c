/* Fixed-bucket histograms (see histogram.h). */
#include "histogram.h"

#include <string.h>

const double hk_latency_bounds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                    0.5,   1,    2.5,   5,    10,  30,
                                    60,    300,  1800};
const int hk_latency_n = sizeof hk_latency_bounds / sizeof(double);
const double hk_batch_bounds[] = {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000,
                                  2000, 5000, 10000};
const int hk_batch_n = sizeof hk_batch_bounds / sizeof(double);

void hk_histogram_init(hk_histogram *h, const double *bounds, int n) {
  memset(h, 0, sizeof *h);
  h->bounds = bounds;
  h->n_bounds = n < HK_HIST_MAX_BUCKETS ? n : HK_HIST_MAX_BUCKETS;
}

void hk_histogram_observe(hk_histogram *h, double v) {
  int i = 0;

  while (i < h->n_bounds && v > h->bounds[i]) i++;
  if (i < h->n_bounds) h->counts[i]++;
  else h->over++;
  h->sum += v;
  h->count++;
}

void hk_histogram_render(const hk_histogram *h, hk_buf *out,
                         const char *name, const char *labels) {
  long cum = 0;

  for (int i = 0; i < h->n_bounds; i++) {
    cum += h->counts[i];
    hk_buf_printf(out, "%s_bucket{%s,le=\"%g\"} %ld\n", name, labels,
                  h->bounds[i], cum);
  }
  hk_buf_printf(out, "%s_bucket{%s,le=\"+Inf\"} %ld\n", name, labels,
                cum + h->over);
  hk_buf_printf(out, "%s_sum{%s} %.6f\n%s_count{%s} %ld\n", name, labels,
                h->sum, name, labels, h->count);
}
