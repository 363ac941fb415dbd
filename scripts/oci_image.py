#!/usr/bin/env python3
"""Write an OCI image archive (a tar of an OCI image layout) from root filesystems, no registry.

    oci_image.py --ref NAME:TAG --out IMAGE.tar --layer ROOTFS_DIR_OR_LAYER_TAR [--layer ...]
                 [--entrypoint JSON] [--cmd JSON] [--env K=V]... [--user U] [--workdir D]
                 [--label K=V]... [--stop-signal SIGNAL]

Layers are applied in the order given; a layer is a directory (archived here, sorted, numeric
owners, fixed mtimes: the same tree gives the same digest) or an uncompressed tar made earlier
(e.g. a cached base layer). The archive is what `ctr images import`, `k3s ctr images import`
and `nerdctl load` accept; containerd names the image after the ref (docker.io/library/ is
added to a ref without a registry host, as containerd does).
"""
import argparse
import hashlib
import io
import json
import os
import subprocess
import tarfile
import tempfile

EPOCH = "@0"


def layer_from_dir(path, tmpdir):
    """Archive a directory into tmpdir; returns (file, sha256 hex, size)."""
    out = tempfile.NamedTemporaryFile(dir=tmpdir, delete=False)
    h = hashlib.sha256()
    size = 0
    p = subprocess.Popen(
        ["tar", "-C", path, "--numeric-owner", "--xattrs", "--sort=name", f"--mtime={EPOCH}",
         "--clamp-mtime", "-cf", "-", "."],
        stdout=subprocess.PIPE)
    for chunk in iter(lambda: p.stdout.read(1 << 20), b""):
        h.update(chunk)
        out.write(chunk)
        size += len(chunk)
    out.close()
    if p.wait() != 0:
        raise SystemExit(f"oci_image.py: tar of {path} failed")
    return out.name, h.hexdigest(), size


def layer_from_tar(path):
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
            size += len(chunk)
    return path, h.hexdigest(), size


def full_name(ref):
    first = ref.split("/")[0]
    if "/" in ref and ("." in first or ":" in first or first == "localhost"):
        return ref
    return ("docker.io/" + ref) if "/" in ref else ("docker.io/library/" + ref)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ref", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--layer", action="append", required=True)
    ap.add_argument("--entrypoint")
    ap.add_argument("--cmd")
    ap.add_argument("--env", action="append", default=[])
    ap.add_argument("--label", action="append", default=[])
    ap.add_argument("--user", default="")
    ap.add_argument("--workdir", default="/")
    # The signal containerd stops the container with (e.g. SIGINT: PostgreSQL's fast shutdown).
    ap.add_argument("--stop-signal")
    a = ap.parse_args()
    if ":" not in a.ref.rsplit("/", 1)[-1]:
        raise SystemExit(f"oci_image.py: --ref {a.ref} has no tag (NAME:TAG; never rely on :latest)")

    out_dir = os.path.dirname(os.path.abspath(a.out))
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmpdir:
        layers = [layer_from_dir(p, tmpdir) if os.path.isdir(p) else layer_from_tar(p)
                  for p in a.layer]
        env = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
        env = [e for e in env if not any(x.startswith("PATH=") for x in a.env)] + a.env
        config = {"Env": env, "WorkingDir": a.workdir}
        if a.entrypoint:
            config["Entrypoint"] = json.loads(a.entrypoint)
        if a.cmd:
            config["Cmd"] = json.loads(a.cmd)
        if a.user:
            config["User"] = a.user
        if a.stop_signal:
            config["StopSignal"] = a.stop_signal
        if a.label:
            config["Labels"] = dict(kv.split("=", 1) for kv in a.label)
        cfg = {
            "architecture": "amd64", "os": "linux", "config": config,
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + d for _, d, _ in layers]},
            "history": [{"created_by": "oci_image.py layer " + os.path.basename(p)} for p in a.layer],
        }
        blobs = {}

        def put(data):
            d = hashlib.sha256(data).hexdigest()
            blobs[d] = data
            return "sha256:" + d, len(data)

        cdig, csize = put(json.dumps(cfg, sort_keys=True).encode())
        manifest = {
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cdig,
                       "size": csize},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": "sha256:" + d, "size": s} for _, d, s in layers],
        }
        mdig, msize = put(json.dumps(manifest, sort_keys=True).encode())
        index = {"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": mdig,
            "size": msize, "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"io.containerd.image.name": full_name(a.ref),
                            "org.opencontainers.image.ref.name": a.ref.rsplit(":", 1)[-1]}}]}

        tmp_out = a.out + ".partial"
        with tarfile.open(tmp_out, "w", format=tarfile.PAX_FORMAT) as t:
            def add_bytes(name, data):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mode = 0o644
                t.addfile(info, io.BytesIO(data))

            add_bytes("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
            add_bytes("index.json", json.dumps(index).encode())
            seen = set()
            for path, d, _ in layers:
                if d not in seen:
                    seen.add(d)
                    t.add(path, arcname=f"blobs/sha256/{d}", recursive=False)
            for d, data in blobs.items():
                add_bytes(f"blobs/sha256/{d}", data)
        os.replace(tmp_out, a.out)
    print(f"{full_name(a.ref)} {mdig} {a.out}")


if __name__ == "__main__":
    main()
