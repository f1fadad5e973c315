"""Generated wire contract (package veil.v1). Made by scripts/gen_proto.py; do not edit."""
