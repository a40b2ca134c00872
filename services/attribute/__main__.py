from services.attribute.app import build
from shared.runtime.worker import run

if __name__ == "__main__":
    run("attribute", build)
