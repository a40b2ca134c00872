from shared.worker import run

if __name__ == "__main__":
    run("dedupe")
