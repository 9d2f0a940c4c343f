/* What every transport reports for one send: delivered, worth retrying
 * (with an optional earliest time), or failed for good. */
#ifndef HOOKD_TRANSPORT_H
#define HOOKD_TRANSPORT_H

typedef enum hk_tx_status {
  HK_TX_OK = 0,
  HK_TX_RETRY = 1,
  HK_TX_FAIL = 2
} hk_tx_status;

typedef struct hk_tx_result {
  hk_tx_status status;
  long http_status;       /* 0 when there was no HTTP response */
  double retry_after_sec; /* > 0 when the peer asked for a wait */
  int too_large;          /* the peer refused the payload's size (413) */
  char reason[512];       /* for operators: status and a body snippet, or
                             the network error; never credentials */
} hk_tx_result;

typedef void (*hk_tx_done_cb)(void *ctx, const hk_tx_result *res);

#endif
