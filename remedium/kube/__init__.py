"""Kubernetes plumbing behind `activities/kubernetes.py`: client setup, calls, rollout and Job logic.

Everything here works on the apiserver's own JSON (camelCase dicts, as `kubectl get -o json`
shows them), so what the actions diff, record and compare is exactly what the cluster holds.
"""
