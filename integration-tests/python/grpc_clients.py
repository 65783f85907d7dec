"""gRPC clients that are not wisp's own, for the end-to-end tests (`integration-tests/tests/foreign_clients.rs`).

Two independent HTTP/2 stacks call the agent's unix sockets as real peers do:

- `grpcio`: Python's gRPC (gRPC core, C++), the default channel to `unix:<path>`, or with
  `grpc.default_authority` set to any string, as grpc-java, grpcurl and kubelet's plugin watcher send theirs;
- `h2`: the pure-Python HTTP/2 protocol library with header validation off, so that a request can carry any
  `:authority` or none at all.

Reads a JSON list of calls on stdin, answers a JSON list of outcomes on stdout, one per call, in order:

    call:    {"socket": PATH, "client": "grpcio" | "h2", "authority": null | STRING,
              "absent_authority": BOOL (h2 only), "method": "/csi.v1.Identity/GetPluginInfo",
              "request": {protobuf JSON}}
    outcome: {"code": GRPC_STATUS_NAME, "message": STRING, "response": {protobuf JSON} | null}
             or, when the server reset the stream: {"reset": HTTP2_ERROR_CODE}

The message types come from the agent's own `.proto` files (`--proto-dir`), compiled here with grpcio-tools.
"""

import argparse
import importlib
import json
import socket
import sys
import tempfile
import urllib.parse

import grpc
import h2.config
import h2.connection
import h2.events
from google.protobuf import json_format, message_factory
from grpc_tools import protoc

PROTOS = ["csi.proto", "pluginregistration.proto", "provider.proto"]
TIMEOUT_SECONDS = 30


def load_services(proto_dir):
    """Compiles the protos and returns {"/package.Service/Method": (request class, response class)}."""
    out = tempfile.mkdtemp(prefix="wisp-pb-")
    include = protoc._get_resource_file_name("grpc_tools", "_proto")
    args = ["protoc", f"-I{proto_dir}", f"-I{include}", f"--python_out={out}", *PROTOS]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed on {proto_dir}")
    sys.path.insert(0, out)
    methods = {}
    for proto in PROTOS:
        module = importlib.import_module(proto.removesuffix(".proto") + "_pb2")
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                methods[f"/{service.full_name}/{method.name}"] = (
                    message_factory.GetMessageClass(method.input_type),
                    message_factory.GetMessageClass(method.output_type),
                )
    return methods


def to_json(message):
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def call_grpcio(call, request, response_type):
    options = []
    if call.get("authority") is not None:
        options.append(("grpc.default_authority", call["authority"]))
    with grpc.insecure_channel(f"unix:{call['socket']}", options=options) as channel:
        stub = channel.unary_unary(
            call["method"],
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response_type.FromString,
        )
        try:
            response = stub(request, timeout=TIMEOUT_SECONDS)
        except grpc.RpcError as error:
            return {"code": error.code().name, "message": error.details() or "", "response": None}
        return {"code": "OK", "message": "", "response": to_json(response)}


def call_h2(call, request, response_type):
    connection = h2.connection.H2Connection(
        config=h2.config.H2Configuration(
            client_side=True,
            header_encoding="utf-8",
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
            validate_inbound_headers=False,
        )
    )
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT_SECONDS)
    sock.connect(call["socket"])
    try:
        connection.initiate_connection()
        headers = [(":method", "POST"), (":scheme", "http"), (":path", call["method"])]
        if not call.get("absent_authority"):
            headers.append((":authority", call["authority"]))
        headers += [("content-type", "application/grpc"), ("te", "trailers")]
        stream_id = connection.get_next_available_stream_id()
        connection.send_headers(stream_id, headers)
        body = request.SerializeToString()
        connection.send_data(stream_id, b"\x00" + len(body).to_bytes(4, "big") + body, end_stream=True)
        sock.sendall(connection.data_to_send())

        fields, data = {}, b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                raise SystemExit(f"{call['socket']}: connection closed before the response ended")
            for event in connection.receive_data(chunk):
                if isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                    fields.update(dict(event.headers))
                elif isinstance(event, h2.events.DataReceived):
                    data += event.data
                    connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamReset):
                    return {"reset": int(event.error_code)}
                elif isinstance(event, h2.events.StreamEnded):
                    return h2_outcome(fields, data, response_type)
            sock.sendall(connection.data_to_send())
    finally:
        sock.close()


def h2_outcome(fields, data, response_type):
    code = grpc.StatusCode.UNKNOWN
    for status in grpc.StatusCode:
        if str(status.value[0]) == fields.get("grpc-status"):
            code = status
    message = urllib.parse.unquote(fields.get("grpc-message", ""))
    if code != grpc.StatusCode.OK:
        return {"code": code.name, "message": message, "response": None}
    length = int.from_bytes(data[1:5], "big")
    return {"code": "OK", "message": message, "response": to_json(response_type.FromString(data[5 : 5 + length]))}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proto-dir", required=True)
    args = parser.parse_args()
    methods = load_services(args.proto_dir)
    outcomes = []
    for call in json.load(sys.stdin):
        request_type, response_type = methods[call["method"]]
        request = json_format.ParseDict(call.get("request", {}), request_type())
        client = {"grpcio": call_grpcio, "h2": call_h2}[call["client"]]
        outcomes.append(client(call, request, response_type))
    json.dump(outcomes, sys.stdout)


if __name__ == "__main__":
    main()
