"""Telling within seconds whether a download can work.

TFDS retries an unreachable host for about 3.5 minutes before it fails; a
run without internet should say at once how to use a local copy instead.
"""

import os
import socket
import threading
import urllib.parse

_PROXY_VARIABLES = ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


def _endpoint(url):
    """The (host, port) a download of `url` connects to: the proxy's when one
    is set in the environment, else the URL's own."""
    for name in _PROXY_VARIABLES:
        proxy = os.environ.get(name)
        if proxy:
            parsed = urllib.parse.urlsplit(
                proxy if "://" in proxy else f"http://{proxy}"
            )
            return parsed.hostname, parsed.port or 80
    parsed = urllib.parse.urlsplit(url)
    return parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)


def unreachable(url, timeout=5.0):
    """None if a TCP connection to the host of `url` (or to the configured
    proxy) opens within `timeout` seconds, else why not."""
    host, port = _endpoint(url)
    result = {}

    def connect():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result["ok"] = True
        except OSError as error:
            result["error"] = error

    # Name resolution has no timeout of its own: bound it with a thread.
    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    if result.get("ok"):
        return None
    error = result.get("error")
    reason = (
        f"{type(error).__name__}: {error}" if error else f"no answer in {timeout:.0f} s"
    )
    return f"{host}:{port} cannot be reached ({reason})"
