#!/usr/bin/env python3
"""Prints what the demo run delivered: each hook's counters from the
router's API and, per destination, the batches and one message as the
sink received it. Usage: demo_report.py API_URL SINK_URL"""

import json
import sys
import urllib.request


def get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)


def main():
    api, sink = sys.argv[1], sys.argv[2]
    print("== hooks ==")
    for h in get(api + "/v1/hooks")["hooks"]:
        c = h["counters"]
        print("%-11s %-8s matched=%-4d sent=%-4d failed=%d dead=%d "
              "queued=%d  %s" % (h["id"], h["state"], c["matched"], c["sent"],
                                 c["failed"], c["dead"], c["queued"],
                                 h["name"]))
    print()
    print("== what each destination received ==")
    stats = get(sink + "/_sink/stats")["per_path"]
    for path in sorted(stats):
        s = stats[path]
        msgs = get(sink + "/_sink/messages?path=" + path)["messages"]
        print("%s: %d requests, %d messages; the last one:" %
              (path, s["requests"], s["messages"]))
        print("  " + json.dumps(msgs[-1], ensure_ascii=False) if msgs else
              "  (none)")
        print()


if __name__ == "__main__":
    main()
