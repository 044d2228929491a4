"""Workloads for uvloop: the asyncio implementations run on uvloop's event loop."""

from __future__ import annotations

import asyncio_lib
import uvloop

if __name__ == "__main__":
    raise SystemExit(asyncio_lib.run_main(uvloop.new_event_loop))
