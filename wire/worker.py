"""Entry point of one ``wire gateway --workers`` process."""

from wire.workers import worker_main

if __name__ == "__main__":
    worker_main()
