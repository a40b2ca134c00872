from services.ingest.app import build
from shared.runtime.worker import run

if __name__ == "__main__":
    run("ingest", build)
