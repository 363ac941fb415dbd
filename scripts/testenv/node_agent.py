#!/usr/bin/env python3
"""The test node's two small cluster services, polling the apiserver once a second:

- service DNS: writes a hosts file of every Service's ClusterIP under `SVC.NS.svc.cluster.local`
  for dnsmasq (pods' resolv.conf search list completes `SVC` and `SVC.NS`) and sends dnsmasq
  SIGHUP when it changed;
- volumes: a PersistentVolumeClaim of the StorageClass `PROVISIONER` serves gets a hostPath
  PersistentVolume made for it (a fresh 0777 directory under VOLUMES, as k3s's local-path
  provisioner makes them: hostPath volumes get no fsGroup, so non-root pods must be able to
  write), pre-bound to the claim; a Released volume of ours is deleted with its directory.

    node_agent.py API_URL TOKEN_FILE HOSTS_FILE DNSMASQ_PID_FILE VOLUMES PROVISIONER
"""
import json
import os
import shutil
import signal
import ssl
import sys
import time
import urllib.request

API, TOKEN_FILE, HOSTS, DNSMASQ_PID, VOLUMES, PROVISIONER = sys.argv[1:7]
TOKEN = open(TOKEN_FILE).read().split(",")[0].strip()
TLS = ssl.create_default_context()
TLS.check_hostname = False
TLS.verify_mode = ssl.CERT_NONE


def call(method, path, body=None):
    req = urllib.request.Request(API + path, method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": "Bearer " + TOKEN,
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, context=TLS, timeout=10) as r:
        return json.load(r)


def log(msg):
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def sync_dns():
    lines = []
    for s in call("GET", "/api/v1/services")["items"]:
        ip = s["spec"].get("clusterIP")
        if ip and ip != "None":
            m = s["metadata"]
            lines.append(f"{ip} {m['name']}.{m['namespace']}.svc.cluster.local")
    text = "\n".join(sorted(lines)) + "\n"
    try:
        if open(HOSTS).read() == text:
            return
    except FileNotFoundError:
        pass
    with open(HOSTS + ".new", "w") as f:
        f.write(text)
    os.replace(HOSTS + ".new", HOSTS)
    try:
        os.kill(int(open(DNSMASQ_PID).read().strip()), signal.SIGHUP)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        pass


def sync_volumes():
    volumes = {v["metadata"]["name"]: v for v in call("GET", "/api/v1/persistentvolumes")["items"]}
    for c in call("GET", "/api/v1/persistentvolumeclaims")["items"]:
        m, spec = c["metadata"], c["spec"]
        if c.get("status", {}).get("phase") != "Pending" or spec.get("volumeName"):
            continue
        if spec.get("storageClassName") != PROVISIONER:
            continue
        name = "pvc-" + m["uid"]
        if name in volumes:
            continue
        path = os.path.join(VOLUMES, name)
        os.makedirs(path, exist_ok=True)
        os.chmod(path, 0o777)
        call("POST", "/api/v1/persistentvolumes", {
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": name, "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER}},
            "spec": {
                "capacity": {"storage": spec["resources"]["requests"]["storage"]},
                "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Delete",
                "storageClassName": PROVISIONER,
                "hostPath": {"path": path, "type": "Directory"},
                "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                             "namespace": m["namespace"], "name": m["name"], "uid": m["uid"]},
            }})
        log(f"provisioned {name} for {m['namespace']}/{m['name']}")
    for name, v in volumes.items():
        ours = v["metadata"].get("annotations", {}).get("pv.kubernetes.io/provisioned-by") == PROVISIONER
        if ours and v.get("status", {}).get("phase") in ("Released", "Failed"):
            shutil.rmtree(os.path.join(VOLUMES, name), ignore_errors=True)
            try:
                call("DELETE", f"/api/v1/persistentvolumes/{name}")
            except urllib.error.HTTPError as e:
                if e.code != 404:
                    raise
            log(f"deleted {name}")


def main():
    os.makedirs(VOLUMES, exist_ok=True)
    while True:
        for step in (sync_dns, sync_volumes):
            try:
                step()
            except Exception as e:  # the apiserver restarting, a race with the binder: next round
                log(f"{step.__name__}: {e}")
        time.sleep(1)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    main()
