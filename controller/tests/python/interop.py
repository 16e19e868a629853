"""A non-Rust client for the wardgate controller: stubs generated from proto/wardgate/v1 with
grpcio-tools at run time, mTLS with a wardctl lab certificate. Lists devices, assigns a profile,
shows that a viewer certificate is refused, and, as the gateway's agent, receives the typed
policy bundle. Prints one JSON object per line for the test."""

import argparse
import glob
import json
import os
import sys
import tempfile

try:
    import grpc
    from grpc_tools import protoc
except ImportError as e:  # the test turns this into a failure naming the fix
    print(f"missing python package: {e}; run `cargo xtask setup`", file=sys.stderr)
    sys.exit(3)


def generate(proto_root: str, out: str) -> None:
    protos = sorted(glob.glob(os.path.join(proto_root, "wardgate", "v1", "*.proto")))
    if not protos:
        sys.exit(f"no .proto files under {proto_root}")
    well_known = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    rc = protoc.main(
        ["grpc_tools.protoc", f"-I{proto_root}", f"-I{well_known}",
         f"--python_out={out}", f"--grpc_python_out={out}", *protos]
    )
    if rc != 0:
        sys.exit(f"protoc failed with {rc}")
    sys.path.insert(0, out)


# The transport limit of the policy stream (wardgate_proto::MAX_BUNDLE_BYTES); grpcio's default
# receive limit is 4 MiB.
MAX_BUNDLE_BYTES = 32 << 20


def channel(addr: str, certs: str, identity: str) -> grpc.Channel:
    def read(name: str) -> bytes:
        with open(os.path.join(certs, name), "rb") as f:
            return f.read()

    creds = grpc.ssl_channel_credentials(
        root_certificates=read("ca.pem"),
        private_key=read(f"{identity}.key"),
        certificate_chain=read(f"{identity}.pem"),
    )
    # The lab server certificate names localhost; we dial the loopback address.
    return grpc.secure_channel(addr, creds, options=[
        ("grpc.ssl_target_name_override", "localhost"),
        ("grpc.max_receive_message_length", MAX_BUNDLE_BYTES),
    ])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--addr", required=True)
    ap.add_argument("--certs", required=True)
    ap.add_argument("--proto-root", required=True)
    ap.add_argument("--device", required=True)
    ap.add_argument("--profile", required=True)
    ap.add_argument("--reason", required=True)
    ap.add_argument("--gateway", required=True)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as out:
        generate(args.proto_root, out)
        from wardgate.v1 import admin_pb2, admin_pb2_grpc  # generated above
        from wardgate.v1 import agent_pb2, agent_pb2_grpc, policy_pb2

        with channel(args.addr, args.certs, "user-eve") as ch:
            admin = admin_pb2_grpc.AdminServiceStub(ch)
            devices = admin.ListDevices(admin_pb2.ListDevicesRequest(), timeout=10).devices
            print(json.dumps({"devices": [
                {"name": d.name, "profile": d.profile, "mode": d.mode, "gateway": d.gateway}
                for d in devices]}))
            w = admin.AssignProfile(
                admin_pb2.AssignProfileRequest(device=args.device, profile=args.profile,
                                               reason=args.reason),
                timeout=10,
            )
            print(json.dumps({"assigned": {"audit_seq": w.audit_seq,
                                           "generations": dict(w.generations)}}))
            d = admin.GetDevice(admin_pb2.GetDeviceRequest(name=args.device), timeout=10)
            print(json.dumps({"device": {"name": d.name, "profile": d.profile}}))

        with channel(args.addr, args.certs, "user-vic") as ch:
            admin = admin_pb2_grpc.AdminServiceStub(ch)
            try:
                admin.AssignProfile(
                    admin_pb2.AssignProfileRequest(device=args.device, profile="ct", reason="x"),
                    timeout=10,
                )
                print(json.dumps({"viewer_assign": "OK"}))
            except grpc.RpcError as e:
                print(json.dumps({"viewer_assign": e.code().name}))

        with channel(args.addr, args.certs, f"gateway-{args.gateway}") as ch:
            agent = agent_pb2_grpc.AgentServiceStub(ch)
            reg = agent.Register(agent_pb2.RegisterRequest(gateway=args.gateway), timeout=10)
            stream = agent.WatchPolicy(agent_pb2.WatchPolicyRequest(gateway=args.gateway), timeout=10)
            b = next(stream)
            stream.cancel()
            profiles = {p.policy_id: p for p in b.policy.policies}
            print(json.dumps({"bundle": {
                "registered_epoch": reg.epoch,
                "gateway": b.gateway,
                "generation": b.generation,
                "epoch": b.epoch,
                "content_hash": b.content_hash,
                "devices": {d.name: {
                    "id": d.device_id,
                    "profile": profiles[d.policy_id].profile,
                    "profile_version": profiles[d.policy_id].profile_version,
                    "mode": policy_pb2.DeviceMode.Name(d.mode),
                    "mac": d.mac.hex(),
                    "addrs": [a.hex() for a in d.addrs],
                } for d in b.policy.devices},
                "rules": sum(len(p.rules) for p in b.policy.policies),
                "ports": len(b.policy.ports),
            }}))


if __name__ == "__main__":
    main()
