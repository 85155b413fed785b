"""Entry point of a node's store process:
``python -m zkv.store_main CONFIG ENDPOINT READY_FD [SUPERVISOR_PID]``."""

import sys

import zmq

from zkv.config import ConfigError, load_config
from zkv.store.durability import DataDirInUse


def main() -> int:
    config_path, endpoint, ready_fd = sys.argv[1], sys.argv[2], int(sys.argv[3])
    supervisor = int(sys.argv[4]) if len(sys.argv) > 4 else None
    try:
        cfg = load_config(config_path)
        from zkv.store.server import main as store_main

        return store_main(cfg, endpoint, ready_fd, supervisor)
    except (ConfigError, DataDirInUse) as exc:
        print(f"zkv: {exc}", file=sys.stderr)
        return 2
    except zmq.ZMQError as exc:
        print(f"zkv: cannot bind the bus or internal socket: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"zkv: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
