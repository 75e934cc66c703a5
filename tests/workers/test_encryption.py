"""CurveZMQ between master and workers: a relay on the path sees the dataset's bytes
only when encryption is off."""

from __future__ import annotations

import selectors
import socket
import threading

import numpy as np
import pytest
from sklearn.linear_model import Ridge

from hpsearch import RemoteWorkers, run_search
from hpsearch.workers.protocol import make_token, parse_token, server_key


class RecordingRelay:
    """A TCP relay on loopback that forwards both ways and keeps every byte it forwards."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.recorded = bytearray()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="recording-relay", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.listener, selectors.EVENT_READ, None)
        socks: list[socket.socket] = [self.listener]
        try:
            while not self._stop.is_set():
                for key, _ in sel.select(timeout=0.1):
                    if key.data is None:
                        client, _ = self.listener.accept()
                        upstream = socket.create_connection(self.target, timeout=5)
                        for a, b in ((client, upstream), (upstream, client)):
                            a.setblocking(True)
                            sel.register(a, selectors.EVENT_READ, b)
                            socks.append(a)
                        continue
                    src, dst = key.fileobj, key.data
                    try:
                        data = src.recv(1 << 20)
                    except OSError:
                        data = b""
                    if not data:
                        for s in (src, dst):
                            try:
                                sel.unregister(s)
                            except (KeyError, ValueError):
                                pass
                            s.close()
                        continue
                    with self._lock:
                        self.recorded += data
                    dst.sendall(data)
        finally:
            for s in socks:
                s.close()
            sel.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)


@pytest.mark.parametrize("encrypt", [True, False])
def test_a_relay_on_the_path_sees_the_data_only_without_encryption(spawn_worker, encrypt):
    rng = np.random.default_rng(42)
    X, y = rng.normal(size=(400, 8)), rng.normal(size=400)
    marker = X[:64].tobytes()  # 4 KiB of the dataset as it is in memory
    with RemoteWorkers("tcp://127.0.0.1:*", encrypt=encrypt, join_timeout=60) as pool:
        assert pool.encrypt is encrypt and (server_key(pool.token) is not None) is encrypt
        relay = RecordingRelay(("127.0.0.1", int(pool.endpoint.rsplit(":", 1)[1])))
        try:
            spawn_worker(f"tcp://127.0.0.1:{relay.port}", pool.token, "--name", "relayed")
            result = run_search(Ridge(), {"alpha": [0.1, 1.0, 10.0]}, X, y, cv=3, workers=pool, progress=False)
        finally:
            relay.close()
    recorded = bytes(relay.recorded)
    assert len(recorded) > len(marker)  # the whole search went through the relay
    assert (marker in recorded) is not encrypt
    assert (b"alpha" in recorded) is not encrypt  # nor the params
    reference = run_search(Ridge(), {"alpha": [0.1, 1.0, 10.0]}, X, y, cv=3, workers=1, progress=False)
    np.testing.assert_array_equal(result.cv_results_["mean_test_score"], reference.cv_results_["mean_test_score"])


def test_encryption_is_on_by_default_off_loopback_and_the_key_rides_in_the_token():
    token = make_token()
    remote = RemoteWorkers("tcp://0.0.0.0:5555", token=token)
    assert remote.encrypt and server_key(remote.token) is not None
    assert parse_token(remote.token) == parse_token(token) and remote.token in remote.join_command
    again = RemoteWorkers("tcp://0.0.0.0:5556", token=remote.token)  # the join token reused: same key
    assert again.token == remote.token
    local = RemoteWorkers("tcp://127.0.0.1:*", token=token)
    assert not local.encrypt and local.token == token


def test_without_the_token_nothing_gets_past_the_encrypted_handshake():
    import time

    import zmq

    with RemoteWorkers("tcp://127.0.0.1:*", encrypt=True) as pool:
        ctx = zmq.Context()
        socks = []
        try:
            stranger = ctx.socket(zmq.DEALER)  # knows the public key (it is in the token), not the secret
            stranger.curve_serverkey = server_key(pool.token)
            stranger.curve_publickey, stranger.curve_secretkey = zmq.curve_keypair()
            plain = ctx.socket(zmq.DEALER)  # no encryption at all
            socks = [stranger, plain]
            for sock in socks:
                sock.linger = 0
                sock.connect(pool.endpoint)
            for sock in socks:
                for _ in range(5):
                    sock.send_multipart([b"HPS\x01B" + bytes(1000)] * 3, zmq.NOBLOCK)
            time.sleep(1.0)
            assert pool.stats["dropped"] == 0  # not one message reached the master's loop
        except zmq.Again:
            pass  # not even queued: no connection completed
        finally:
            for sock in socks:
                sock.close(linger=0)
            ctx.term()
        assert pool.stats["dropped"] == 0
