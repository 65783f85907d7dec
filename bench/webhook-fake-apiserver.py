#!/usr/bin/env python3
"""Minimal plain-HTTP stand-in for the Kubernetes API, only for bench/webhook-load.sh: /version, a metadata LIST of
ServiceAccounts (one, `bench/workload`), an idle WATCH and GET of that ServiceAccount. The real fake used by the
tests is integration-tests/src/fake_kube.rs; this one exists so the benchmark needs no Rust test harness."""

import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

SA_META = {
    "name": "workload",
    "namespace": "bench",
    "uid": "00000000-0000-0000-0000-0000000000aa",
    "resourceVersion": "1",
    "annotations": {"azure.workload.identity/client-id": "11111111-1111-1111-1111-111111111111"},
}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def send_json(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urlparse(self.path)
        query = parse_qs(url.query)
        if url.path == "/version":
            return self.send_json(200, {"major": "1", "minor": "33", "gitVersion": "v1.33.0"})
        if url.path == "/api/v1/serviceaccounts" and query.get("watch") == ["true"]:
            # Nothing changes during a benchmark: hold the watch open until its timeout.
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.flush()
            time.sleep(int(query.get("timeoutSeconds", ["290"])[0]))
            return
        if url.path == "/api/v1/serviceaccounts":
            item = {"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": SA_META}
            return self.send_json(
                200,
                {
                    "apiVersion": "meta.k8s.io/v1",
                    "kind": "PartialObjectMetadataList",
                    "metadata": {"resourceVersion": "1"},
                    "items": [item],
                },
            )
        if url.path == "/api/v1/namespaces/bench/serviceaccounts/workload":
            return self.send_json(200, {"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": SA_META})
        name = url.path.rsplit("/", 1)[-1]
        return self.send_json(
            404,
            {
                "apiVersion": "v1",
                "kind": "Status",
                "status": "Failure",
                "message": f'serviceaccounts "{name}" not found',
                "reason": "NotFound",
                "code": 404,
            },
        )


if __name__ == "__main__":
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
