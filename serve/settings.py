"""The Serve application's typed arguments (`serve run` config, CLI, tests)."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class ServeSettings(BaseModel):
    """Everything an operator may set; unknown keys are errors, like the experiment YAML."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_uri: str = "models:/mammo-microcal@champion"
    tracking_uri: str = ""            # "" = MLFLOW_TRACKING_URI, else the project's mlflow.db
    host: str = "127.0.0.1"           # loopback by default; 0.0.0.0 only on purpose
    port: int = Field(8000, ge=1, le=65535)
    num_replicas: int = Field(1, ge=1)
    # direct: the one replica answers HTTP on `port` itself (Ray Serve's direct ingress),
    # with no proxy actor in between: 3-4x the throughput on 2 cores (docs/benchmarks.md).
    # It needs a local Ray node and one replica; otherwise, and with `proxy`, requests go
    # through Serve's HTTP proxy, which spreads them over the replicas of a cluster.
    ingress: Literal["direct", "proxy"] = "direct"
    replica_cpus: float = Field(1.0, gt=0)
    # TensorFlow intra/inter-op threads per replica. auto: the CPUs the replica may use,
    # measured when it starts (cores, fewer under a container's CPU quota: serve/host.py);
    # with several replicas on one host, give cores / replicas
    tf_threads: Annotated[int, Field(ge=1)] | Literal["auto"] = "auto"
    # the experts of one model call: one after the other, at once on the replica's
    # threads, or as one compiled graph; auto: whichever scores fastest on this host,
    # measured when the replica starts (serve/host.py)
    expert_calls: Literal["auto", "sequential", "concurrent", "graph"] = "auto"
    max_batch_size: int = Field(32, ge=1)       # images per @serve.batch call, summed
    # a batch waits this long for company only while other requests are in flight
    batch_wait_timeout_s: float = Field(0.02, ge=0)
    max_ongoing_requests: int = Field(64, ge=1)  # per replica, in flight
    max_queued_requests: int = Field(256, ge=1)  # beyond this: 503 at once (backpressure)
    max_images_per_request: int = Field(256, ge=1)
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    wrong_size: Literal["reject", "resize"] = "reject"
    # Image formats tried when decoding an image (Pillow's names, PPM reads PGM, and
    # DICOM); others are 400. A study trained on other files (e.g. JPEG folders) adds its own.
    image_formats: tuple[Literal["PNG", "PPM", "TIFF", "JPEG", "DICOM"], ...] = (
        "PNG", "PPM", "DICOM")
    # with wrong_size=resize: a header over this many pixels is refused before decoding
    max_image_pixels: int = Field(2048 * 2048, ge=1)
    # all the images of one request together, counted from their headers before decoding
    # (256 images of max_image_pixels would be over a billion pixels)
    max_request_pixels: int = Field(2 ** 26, ge=1)
    # /explain: one explanation at a time per replica; past the deadline the client gets
    # 504 (the computation finishes in the background and is dropped).
    explain_timeout_s: float = Field(30.0, gt=0)
