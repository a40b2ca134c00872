from services.identity_match.app import build
from shared.runtime.worker import run

if __name__ == "__main__":
    run("identity_match", build)
