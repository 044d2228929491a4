"""Workloads for uvloop: the asyncio implementations run on uvloop's event loop."""

from __future__ import annotations

import uvloop

import asyncio_lib

if __name__ == "__main__":
    raise SystemExit(asyncio_lib.run_main(uvloop.new_event_loop))
