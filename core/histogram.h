/* Fixed-bucket histograms for the metrics endpoint: cumulative counts
 * per upper bound, their sum and count, as Prometheus shows them. */
#ifndef HOOKD_HISTOGRAM_H
#define HOOKD_HISTOGRAM_H

#include "buf.h"

#define HK_HIST_MAX_BUCKETS 16

typedef struct hk_histogram {
  const double *bounds; /* upper bounds, ascending */
  int n_bounds;
  long counts[HK_HIST_MAX_BUCKETS]; /* per bucket, not cumulative */
  long over;                        /* above the last bound */
  double sum;
  long count;
} hk_histogram;

/* Seconds from acceptance to acknowledgement, and messages per batch. */
extern const double hk_latency_bounds[];
extern const int hk_latency_n;
extern const double hk_batch_bounds[];
extern const int hk_batch_n;

void hk_histogram_init(hk_histogram *h, const double *bounds, int n);
void hk_histogram_observe(hk_histogram *h, double v);

/* Appends the series name_bucket{labels,le=...}, name_sum and
 * name_count; labels is "key=\"value\",..." without braces. */
void hk_histogram_render(const hk_histogram *h, hk_buf *out,
                         const char *name, const char *labels);

#endif
