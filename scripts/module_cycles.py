#!/usr/bin/env python3
"""Checks the module graph of src/ (file level, `use crate::`/`super::` paths, test modules left
out) and fails, one line per finding, on:
- an import cycle (one line per strongly connected set of modules);
- a boundary crossed: `cli/` and `rules/` never import `operator/`, `rules/` never imports `cli/`
  (the decisions both sides agree on live in `rules/`, so the operator's functions are not a
  contract of the CLI); a folder of `operator/` never imports another folder's `*reconcile`
  (its I/O shell) — only `operator/run.rs` knows every folder.
CI runs it (scripts/test.sh)."""
import os, re, sys
root=os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'src')
mods={}
for dp,_,fs in os.walk(root):
    for f in fs:
        if not f.endswith('.rs'): continue
        p=os.path.join(dp,f)
        rel=p[len(root)+1:-3]
        parts=rel.split('/')
        if parts[-1]=='mod': parts=parts[:-1]
        if parts==['lib']: parts=[]
        mods['::'.join(parts)]=p
def resolve(cur, path):
    # path like crate::a::b::c or super::x
    segs=path.split('::')
    if segs[0]=='crate': base=[]; segs=segs[1:]
    elif segs[0]=='super':
        base=cur.split('::')[:-1] if cur else []
        segs=segs[1:]
        while segs and segs[0]=='super': base=base[:-1]; segs=segs[1:]
    else: return None
    best=None
    for i in range(len(segs),0,-1):
        cand='::'.join(base+segs[:i])
        if cand in mods: best=cand; break
    return best
edges={}
for m,p in mods.items():
    t=open(p).read()
    t=t.split('#[cfg(test)]')[0]
    deps=set()
    for u in re.findall(r'\b((?:crate|super)(?:::\w+)+)',t):
        r=resolve(m,u)
        if r and r!=m and not m.startswith(r+'::') : deps.add(r)
    edges[m]=deps
# SCCs (Tarjan)
sys.setrecursionlimit(10000)
idx={};low={};st=[];on=set();sccs=[];c=[0]
def sc(v):
    idx[v]=low[v]=c[0];c[0]+=1;st.append(v);on.add(v)
    for w in edges.get(v,()):
        if w not in idx: sc(w);low[v]=min(low[v],low[w])
        elif w in on: low[v]=min(low[v],idx[w])
    if low[v]==idx[v]:
        comp=[]
        while True:
            w=st.pop();on.discard(w);comp.append(w)
            if w==v:break
        if len(comp)>1: sccs.append(sorted(comp))
for v in list(edges):
    if v not in idx: sc(v)
for s in sccs: print('import cycle:', ' -> '.join(s))
FORBIDDEN = [("cli", "operator"), ("rules", "operator"), ("rules", "cli")]
crossings = []
for m, deps in sorted(edges.items()):
    for d in sorted(deps):
        for a, b in FORBIDDEN:
            if (m == a or m.startswith(a + "::")) and (d == b or d.startswith(b + "::")):
                crossings.append(f"{m} imports {d}: {a}/ never imports {b}/")
# A resource folder may use another's pure files, never its reconcile (I/O) files; only run.rs
# knows every folder.
for m, deps in sorted(edges.items()):
    parts = m.split("::")
    if len(parts) < 3 or parts[0] != "operator" or m == "operator::run":
        continue
    for d in sorted(deps):
        dp = d.split("::")
        # The upgrade is a part of Dhis2Instance, not a kind of its own: the instance's
        # reconcile drives its steps (upgrade/reconcile.rs, read_only_copy_reconcile.rs).
        if parts[1] == "instance" and dp[:2] == ["operator", "upgrade"]:
            continue
        if len(dp) >= 3 and dp[0] == "operator" and dp[1] != parts[1] and dp[-1].endswith("reconcile"):
            crossings.append(f"{m} imports {d}: a folder never uses another's reconcile")
for c in crossings: print(c)
if sccs or crossings:
    sys.exit(1)
print("module graph: no cycles, no boundary crossed")
