"""`python3 -P -m mailboot.health`: the image's HEALTHCHECK and the Kubernetes probes call it by
this name, so it stays here while the check lives in `mailboot.diagnose.health`."""

from mailboot.diagnose.health import main

if __name__ == "__main__":
    raise SystemExit(main())
