"""HTTP clients that are not wisp's own, for the end-to-end tests (`integration-tests/src/foreign_clients.rs`).

They call the webhook's and the agent's ports the way other stacks do, with TLS from OpenSSL (Python's `ssl`)
instead of rustls:

- `http1`: `http.client`, HTTP/1.1;
- `h2`: the pure-Python HTTP/2 library over a TLS connection that negotiated `h2` by ALPN, as kube-apiserver
  (Go's net/http) calls admission webhooks.

Reads a JSON list of calls on stdin, answers a JSON list of outcomes on stdout, one per call, in order:

    call:    {"client": "http1" | "h2", "host": "127.0.0.1", "port": N, "ca_file": PATH | null (plain HTTP),
              "method": "POST", "path": "/mutate-v1-pod",
              "content_type": STRING | null, "body": STRING | null}
    outcome: {"status": N, "alpn": "h2" | "http/1.1" | null, "body": STRING}
"""

import http.client
import json
import socket
import ssl
import sys

import h2.config
import h2.connection
import h2.events

TIMEOUT_SECONDS = 30


def tls_context(call, alpn):
    context = ssl.create_default_context(cafile=call["ca_file"])
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(alpn)
    return context


def call_http1(call):
    headers = {}
    if call.get("content_type"):
        headers["Content-Type"] = call["content_type"]
    if call.get("ca_file"):
        context = tls_context(call, ["http/1.1"])
        connection = http.client.HTTPSConnection(
            call["host"], call["port"], timeout=TIMEOUT_SECONDS, context=context
        )
    else:
        connection = http.client.HTTPConnection(call["host"], call["port"], timeout=TIMEOUT_SECONDS)
    body = call.get("body")
    connection.request(call["method"], call["path"], body=body.encode() if body is not None else None, headers=headers)
    response = connection.getresponse()
    alpn = connection.sock.selected_alpn_protocol() if isinstance(connection.sock, ssl.SSLSocket) else None
    outcome = {"status": response.status, "alpn": alpn, "body": response.read().decode()}
    connection.close()
    return outcome


def call_h2(call):
    context = tls_context(call, ["h2"])
    raw = socket.create_connection((call["host"], call["port"]), TIMEOUT_SECONDS)
    sock = context.wrap_socket(raw, server_hostname=call["host"])
    try:
        alpn = sock.selected_alpn_protocol()
        if alpn != "h2":
            return {"status": 0, "alpn": alpn, "body": ""}
        connection = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
        connection.initiate_connection()
        body = (call.get("body") or "").encode()
        headers = [
            (":method", call["method"]),
            (":scheme", "https"),
            (":authority", f"{call['host']}:{call['port']}"),
            (":path", call["path"]),
            ("content-length", str(len(body))),
        ]
        if call.get("content_type"):
            headers.append(("content-type", call["content_type"]))
        stream_id = connection.get_next_available_stream_id()
        connection.send_headers(stream_id, headers, end_stream=not body)
        if body:
            connection.send_data(stream_id, body, end_stream=True)
        sock.sendall(connection.data_to_send())
        status, data = 0, b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                raise SystemExit(f"{call['host']}:{call['port']}: connection closed before the response ended")
            for event in connection.receive_data(chunk):
                if isinstance(event, h2.events.ResponseReceived):
                    status = int(dict(event.headers)[b":status"])
                elif isinstance(event, h2.events.DataReceived):
                    data += event.data
                    connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamReset):
                    return {"status": 0, "alpn": alpn, "body": f"reset {int(event.error_code)}"}
                elif isinstance(event, h2.events.StreamEnded):
                    return {"status": status, "alpn": alpn, "body": data.decode()}
            sock.sendall(connection.data_to_send())
    finally:
        sock.close()


def main():
    outcomes = []
    for call in json.load(sys.stdin):
        client = {"http1": call_http1, "h2": call_h2}[call["client"]]
        outcomes.append(client(call))
    json.dump(outcomes, sys.stdout)


if __name__ == "__main__":
    main()
