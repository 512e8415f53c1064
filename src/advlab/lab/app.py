"""The lab's web application: one static page and a JSON API over the library (FastAPI).

Quick answers (pick an image, upload, toggle a trigger) run in the thread pool; everything long is a
job (advlab.lab.jobs): POST /api/jobs/<kind> returns its id at once, GET /api/jobs/<id>/events streams
its progress and result as server-sent events, POST /api/jobs/<id>/cancel stops it between forward
passes. The black-box panel attacks the model through advlab's own prediction API (advlab.serve),
started in this process on a loopback port for each run with the run's query budget: the server, not
the page, refuses the query past the budget (HTTP 429).

Every request body is validated (pydantic bounds; uploads capped in bytes and pixels before
decoding); a user error answers 400 with a one-line reason, a wrong or missing token 401/403.
"""

from __future__ import annotations

import asyncio
import copy
import hmac
import json
import os
import secrets
import tempfile
import threading
import time
from collections import OrderedDict
from importlib import resources
from pathlib import Path
from typing import Literal

import torch
from fastapi import Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from advlab import __version__
from advlab.attacks import MINIMAL_NORM_ATTACKS, WHITEBOX_ATTACKS
from advlab.attacks.blackbox import HopSkipJump, Square
from advlab.attacks.blackbox.oracle import HttpOracle, Oracle, encode_array
from advlab.data import load_dataset
from advlab.errors import AdvlabError
from advlab.lab import panels
from advlab.lab.backdoor import LabBackdoorSettings, PoisonedModel, build_poisoned_model
from advlab.lab.images import DEFAULT_MAX_PIXELS, DEFAULT_MAX_UPLOAD_BYTES, decode_upload, image_url, png_bytes
from advlab.lab.jobs import TERMINAL, Job, JobRunner, TooBusy, watched_copy
from advlab.lab.models import ModelEntry, ModelRegistry
from advlab.serve import create_app, running_server

STATIC = resources.files("advlab.lab") / "static"
BLACKBOX_ATTACKS = ("square", "hopskipjump")
KEEP_IMAGES = 512


class LabError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


class PickRequest(BaseModel):
    model: str | None = None
    label: int | None = Field(None, ge=0, le=100_000, description="a class index: a random image of this class")
    index: int | None = Field(None, ge=0, description="a test-set index")


class WhiteboxRequest(BaseModel):
    model: str | None = None
    image: str
    attack: str = "pgd"
    norm: Literal["linf", "l2"] = "linf"
    eps: float = Field(0.3, ge=0.0, le=100.0)
    steps: int | None = Field(None, ge=1, le=1000)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    target: int | None = Field(None, ge=0)


class CurveRequest(WhiteboxRequest):
    points: int = Field(8, ge=2, le=30)


class FoolingRequest(BaseModel):
    model: str | None = None
    target: int = Field(0, ge=0)
    eps: float = Field(0.25, ge=0.0, le=1.0)
    steps: int = Field(1, ge=1, le=200)
    seed: int = Field(0, ge=0, le=2**31 - 1)


class BlackboxRequest(BaseModel):
    model: str | None = None
    image: str
    attack: Literal["square", "hopskipjump"] = "square"
    norm: Literal["linf", "l2"] = "linf"
    eps: float = Field(0.3, gt=0.0, le=100.0)
    budget: int = Field(1000, ge=2, le=100_000)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    target: int | None = Field(None, ge=0)
    url: str | None = Field(None, max_length=500, pattern=r"^https?://[^\s]+$",
                            description="an `advlab serve` elsewhere (empty: this model, served in-process)")
    url_token: str | None = Field(None, max_length=500)


class CertifyRequest(BaseModel):
    model: str | None = None
    image: str
    sigma: float = Field(0.25, gt=0.0, le=2.0)
    n0: int = Field(100, ge=1, le=10_000)
    n: int = Field(1000, ge=1, le=200_000)
    alpha: float = Field(0.001, gt=0.0, lt=0.5)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    attack_steps: int = Field(20, ge=1, le=200)


class ToggleRequest(BaseModel):
    image: str
    trigger: bool = True


class PhysicalRequest(BaseModel):
    result: str
    draws: int = Field(6, ge=1, le=32)
    seed: int = Field(0, ge=0, le=2**31 - 1)


class Bounded(OrderedDict):
    """A dict that forgets its oldest entries past `limit` (images and results of a session)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.lock = threading.Lock()

    def put(self, value) -> str:
        key = secrets.token_hex(8)
        with self.lock:
            self[key] = value
            while len(self) > self.limit:
                self.popitem(last=False)
        return key

    def fetch(self, key: str, what: str):
        with self.lock:
            if key not in self:
                raise LabError(404, f"unknown {what} {key!r} (the lab keeps the latest {self.limit}); pick it again")
            return self[key]


class ObservedOracle(Oracle):
    """Passes every query to an inner oracle, checks the job for cancellation first, and calls
    `observe` after each answer (the live query counter and best image)."""

    def __init__(self, inner: Oracle, job: Job, observe) -> None:
        super().__init__(None)
        self.inner, self.job, self.observe = inner, job, observe
        self.labels_only, self.num_classes, self.input_shape = inner.labels_only, inner.num_classes, inner.input_shape

    def _answer(self, x: torch.Tensor) -> torch.Tensor:
        self.job.check()
        out = self.inner.query(x)
        self.observe()
        return out


def create_lab_app(registry: ModelRegistry, token: str | None = None, max_jobs: int = 2, max_waiting: int = 16,
                   max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS,
                   backdoor: LabBackdoorSettings | None = None, data_dir: str | None = None) -> FastAPI:
    """The lab over the models in registry. token: required on every API call (header
    'Authorization: Bearer TOKEN' or ?token=); max_jobs: long operations running at once."""
    runner = JobRunner(max_workers=max_jobs, max_waiting=max_waiting)
    images: Bounded = Bounded(KEEP_IMAGES)
    results: Bounded = Bounded(KEEP_IMAGES)
    backdoor_settings = backdoor or LabBackdoorSettings()
    poisoned: dict = {"model": None, "job": None}
    poisoned_lock = threading.Lock()
    device = registry.device

    app = FastAPI(title="advlab lab", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.runner = runner
    app.state.registry = registry
    app.state.poisoned = poisoned  # {"model": PoisonedModel once prepared}

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        # the page loads nothing from elsewhere: images are data: URLs, scripts and styles our own files
        response.headers["Content-Security-Policy"] = ("default-src 'self'; img-src 'self' data:; "
                                                       "style-src 'self'; script-src 'self'; frame-ancestors 'none'")
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    @app.exception_handler(LabError)
    async def lab_error(request: Request, exc: LabError) -> JSONResponse:
        return JSONResponse(status_code=exc.status, content={"detail": exc.detail})

    @app.exception_handler(AdvlabError)
    async def user_error(request: Request, exc: AdvlabError) -> JSONResponse:
        status = 429 if isinstance(exc, TooBusy) else 400
        return JSONResponse(status_code=status, content={"detail": str(exc)})

    def authorize(request: Request, token_param: str | None = Query(None, alias="token")) -> None:
        if token is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        given = given if scheme.lower() == "bearer" and given else token_param
        if not given:
            raise LabError(401, "missing token: open the URL `advlab lab` printed (it carries ?token=...)")
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise LabError(403, "wrong token")

    guarded = [Depends(authorize)]

    def entry_of(model_id: str | None) -> ModelEntry:
        try:
            return registry.get(model_id)
        except AdvlabError as exc:
            raise LabError(404, str(exc)) from None

    def image_of(image_id: str, entry: ModelEntry) -> dict:
        record = images.fetch(image_id, "image")
        if tuple(record["x"].shape) != entry.input_shape:
            raise LabError(400, f"the image has shape {tuple(record['x'].shape)} but {entry.meta['architecture']} "
                                f"takes {entry.input_shape}: pick or upload an image for this model")
        return record

    def label_of(record: dict, model) -> int:
        """The true label of a test image; for an upload, the model's own prediction stands in."""
        return record["label"] if record["label"] is not None else panels.predicted(model, record["x"])

    def check_class(value: int | None, entry: ModelEntry, what: str) -> None:
        if value is not None and not 0 <= value < len(entry.classes):
            raise LabError(400, f"{what} must be in 0..{len(entry.classes) - 1}, got {value}")

    def image_answer(key: str, record: dict, entry: ModelEntry) -> dict:
        model = registry.model(entry)
        x = record["x"].to(device)
        return {"image": key, "model": entry.id, "source": record["source"], "label": record["label"],
                "label_name": None if record["label"] is None else entry.classes[record["label"]],
                "png": image_url(x), "top5": panels.top_classes(model, x, entry.classes)}

    def submit(kind: str, work) -> dict:
        job = runner.submit(kind, work)
        return {"job": job.id, "kind": kind}

    def model_job(kind: str, entry: ModelEntry, work, expected_forwards: int | None = None, watched: bool = True
                  ) -> dict:
        """The one shape of a job on a model: work(model, job) runs on the job's own copy of the model
        (watched: every forward pass advances the progress and checks for cancellation)."""
        def run(job: Job) -> dict:
            job.expected_forwards = expected_forwards
            model = registry.model(entry)
            return work(watched_copy(model, job) if watched else copy.deepcopy(model).eval(), job)

        return submit(kind, run)

    def keep_result(entry: ModelEntry, x, adv, numbers: dict, label: int, target: int | None) -> dict:
        """Store an attack's outcome for the downloads and the physical panel; the job's answer."""
        key = results.put({"x": x, "adv": adv, "numbers": numbers, "model": entry.id, "label": label,
                           "target": target})
        return {**numbers, "result": key, "model": entry.id}

    # ---- the page -------------------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(str(STATIC / "index.html"), media_type="text/html")

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.get("/api/info", dependencies=guarded)
    async def info() -> dict:
        return {"advlab_version": __version__, "models": registry.describe(), "default_model": registry.default,
                "whitebox_attacks": list(WHITEBOX_ATTACKS), "minimal_norm_attacks": list(MINIMAL_NORM_ATTACKS),
                "blackbox_attacks": list(BLACKBOX_ATTACKS), "max_jobs": max_jobs, "max_upload_bytes": max_upload_bytes,
                "max_pixels": max_pixels, "backdoor": {"ready": poisoned["model"] is not None,
                                                       "settings": backdoor_settings.__dict__}}

    # ---- images ---------------------------------------------------------------------------------

    @app.post("/api/images/pick", dependencies=guarded)
    async def pick(body: PickRequest) -> dict:
        entry = entry_of(body.model)
        check_class(body.label, entry, "label")

        def work() -> dict:
            data = registry.test_set(entry)
            if data is None:
                raise LabError(400, f"the test set of {entry.meta.get('dataset')!r} is not available here; upload "
                                    "an image instead (or set ADVLAB_DATA)")
            if body.index is not None:
                if body.index >= len(data):
                    raise LabError(400, f"index must be in 0..{len(data) - 1}, got {body.index}")
                index = body.index
            else:
                pool = (torch.nonzero(data.labels == body.label).flatten() if body.label is not None
                        else torch.arange(len(data)))
                if len(pool) == 0:
                    raise LabError(400, f"the test set has no image of class {body.label}")
                index = int(pool[int.from_bytes(os.urandom(4), "little") % len(pool)])
            x, y = data[index]
            record = {"x": x.to(device), "label": int(y), "source": f"test image {index}", "index": index}
            return image_answer(images.put(record), record, entry)

        return await run_in_threadpool(work)

    @app.post("/api/images/upload", dependencies=guarded)
    async def upload(request: Request, model: str | None = None) -> dict:
        entry = entry_of(model)
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_upload_bytes:
            raise LabError(413, f"the upload is {declared} bytes; the limit is {max_upload_bytes} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_upload_bytes:
                raise LabError(413, f"the upload exceeds the limit of {max_upload_bytes} bytes")
            chunks.append(chunk)
        data = b"".join(chunks)

        def work() -> dict:
            x = decode_upload(data, entry.input_shape, max_upload_bytes, max_pixels).to(device)
            record = {"x": x, "label": None, "source": "upload", "index": None}
            return image_answer(images.put(record), record, entry)

        return await run_in_threadpool(work)

    @app.get("/api/images/{image_id}.png", dependencies=guarded)
    async def image_png(image_id: str) -> Response:
        record = images.fetch(image_id, "image")
        return Response(png_bytes(record["x"]), media_type="image/png")

    # ---- white-box, curve, fooling ----------------------------------------------------------------

    def check_attack(name: str) -> None:
        if name not in WHITEBOX_ATTACKS:
            raise LabError(400, f"unknown attack {name!r}; choose one of {', '.join(WHITEBOX_ATTACKS)}")

    @app.post("/api/jobs/whitebox", dependencies=guarded)
    async def whitebox(body: WhiteboxRequest) -> dict:
        entry = entry_of(body.model)
        record = image_of(body.image, entry)
        check_attack(body.attack)
        check_class(body.target, entry, "target")

        def work(model, job: Job) -> dict:
            x = record["x"]
            y = label_of(record, model)
            numbers, adv = panels.whitebox(model, x, y, entry.classes, body.attack, body.eps, body.norm, body.steps,
                                           body.seed, body.target)
            numbers["png_prediction"] = panels.predicted(model, (adv * 255).round() / 255)
            return keep_result(entry, x, adv, numbers, y, body.target)

        return model_job("whitebox", entry, work, (body.steps or 40) + 3)

    @app.post("/api/jobs/curve", dependencies=guarded)
    async def curve(body: CurveRequest) -> dict:
        entry = entry_of(body.model)
        record = image_of(body.image, entry)
        check_attack(body.attack)

        def work(model, job: Job) -> dict:
            return panels.robustness_curve(model, record["x"], label_of(record, model), body.attack, body.norm,
                                           body.eps, body.points, body.steps, body.seed,
                                           progress=lambda p: job.update(progress=p))

        return model_job("curve", entry, work)

    @app.post("/api/jobs/fooling", dependencies=guarded)
    async def fooling(body: FoolingRequest) -> dict:
        entry = entry_of(body.model)
        check_class(body.target, entry, "target")

        def work(model, job: Job) -> dict:
            return panels.fooling(model, entry.input_shape, entry.classes, body.target, body.eps, body.steps, body.seed)

        return model_job("fooling", entry, work, body.steps + 1)

    # ---- black-box through the prediction API -----------------------------------------------------

    @app.post("/api/jobs/blackbox", dependencies=guarded)
    async def blackbox(body: BlackboxRequest) -> dict:
        entry = entry_of(body.model)
        record = image_of(body.image, entry)
        check_class(body.target, entry, "target")

        def work(model, job: Job) -> dict:
            x = record["x"]
            y = label_of(record, model)
            labels_only = body.attack == "hopskipjump"  # the decision-based attack gets labels only
            served = None if body.url else create_app(model, entry.classes, labels_only=labels_only,
                                                      query_budget=body.budget, input_shape=entry.input_shape)
            # in-process, the attack may plan more queries than the budget: the server is what stops it; a
            # server elsewhere applies its own budget, and the oracle's local budget caps this run besides
            max_queries = body.budget * 10
            attack = (Square(eps=body.eps, norm=body.norm, max_queries=max_queries, seed=body.seed)
                      if body.attack == "square" else
                      HopSkipJump(eps=body.eps, norm=body.norm, max_queries=max_queries, seed=body.seed))
            holder: dict = {}
            original_run = attack.run

            def run_and_expose(state, generator):  # the attack's own bookkeeping, read for the live view
                holder["state"] = state
                return original_run(state, generator)

            attack.run = run_and_expose
            last_image = [0.0]
            history: list = []
            oracles: list = []

            def server_count() -> int | None:
                counter = getattr(served.state, "counter", None) if served is not None else None
                return sum(counter.used.values()) if counter is not None and hasattr(counter, "used") else None

            def observe() -> None:
                state = holder.get("state")
                used = oracles[0].used
                fields = {"queries": used, "server_queries": server_count(), "budget": body.budget}
                if state is not None:
                    loss = float(state.best_loss[0])
                    fields.update(success=bool(state.success[0]),
                                  best_margin=None if loss == float("inf") else loss,
                                  linf=float((state.adv[0] - x).abs().max()),
                                  l2=float((state.adv[0] - x).norm()))
                    if len(history) < 400 or used % 10 == 0:
                        history.append([used, fields["best_margin"]])
                    now = time.monotonic()
                    if now - last_image[0] > 0.2:
                        last_image[0] = now
                        fields["best_image"] = image_url(state.adv[0])
                job.update(progress=used / body.budget, message=f"{used} of {body.budget} queries", **fields)

            def attack_through(url: str, token: str | None, budget: int | None):
                inner = HttpOracle(url, token=token, budget=budget)
                oracles.append(inner)
                try:
                    if tuple(inner.input_shape or ()) != entry.input_shape:
                        raise AdvlabError(f"the oracle at {url} takes {inner.input_shape}, not this image's "
                                          f"{entry.input_shape}")
                    oracle = ObservedOracle(inner, job, observe)
                    return attack(oracle, x.unsqueeze(0).cpu(), torch.tensor([y]), target=body.target), inner
                finally:
                    inner.close()

            if body.url:
                result, inner = attack_through(body.url, body.url_token, body.budget)
                labels_only = inner.labels_only
            else:
                with running_server(served) as url:
                    result, inner = attack_through(url, None, None)
            adv = result.adv[0].to(device)
            stopped = ("budget spent: the server refused the next query" if result.extra["budget_exhausted"]
                       else "the attack succeeded" if bool(result.success[0]) else "the attack gave up")
            numbers = {"attack": body.attack, "norm": body.norm, "eps": body.eps, "budget": body.budget,
                       "seed": body.seed, "label": y, "label_name": entry.classes[y], "target": body.target,
                       "labels_only": labels_only, "oracle": body.url or "this model, served in-process",
                       "success": bool(result.success[0]),
                       "adversarial_prediction": int(result.adv_pred[0]),
                       "adversarial_prediction_name": entry.classes[int(result.adv_pred[0])],
                       "queries": inner.used, "server_queries": server_count(),
                       "queries_at_success": int(result.extra["queries_at_success"][0]),
                       "budget_exhausted": bool(result.extra["budget_exhausted"]), "stopped": stopped,
                       "norms": {k: float(v[0]) for k, v in result.norms.items()},
                       "top5_clean": panels.top_classes(model, x, entry.classes),
                       "top5_adversarial": panels.top_classes(model, adv, entry.classes),
                       "history": history,
                       "images": {"clean": image_url(x), "adversarial": image_url(adv)}}
            return keep_result(entry, x, adv, numbers, y, body.target)

        # not watched: the progress is the queries, counted by the oracle
        return model_job("blackbox", entry, work, watched=False)

    # ---- certify ----------------------------------------------------------------------------------

    @app.post("/api/jobs/certify", dependencies=guarded)
    async def certify(body: CertifyRequest) -> dict:
        entry = entry_of(body.model)
        record = image_of(body.image, entry)

        batch = 500

        def work(model, job: Job) -> dict:
            return panels.certify(model, record["x"], label_of(record, model), entry.classes, body.sigma, body.n0,
                                  body.n, body.alpha, body.seed, body.attack_steps, batch_size=batch)

        return model_job("certify", entry, work, -(-body.n0 // batch) + 2 * -(-body.n // batch) + body.attack_steps + 2)

    # ---- backdoor ---------------------------------------------------------------------------------

    @app.post("/api/jobs/backdoor", dependencies=guarded)
    async def prepare_backdoor() -> dict:
        with poisoned_lock:
            if poisoned["model"] is not None:
                return {"ready": True, **backdoor_answer(poisoned["model"])}
            running = poisoned["job"]
            if running is not None and runner.get(running) is not None and \
                    runner.get(running).status not in TERMINAL:
                return {"job": running, "kind": "backdoor"}

            def work(job: Job) -> dict:
                train = load_dataset("mnist", "train", data_dir)
                test = load_dataset("mnist", "test", data_dir)
                built = build_poisoned_model(train, test, backdoor_settings, device,
                                             progress=lambda p, m: job.update(progress=p, message=m))
                poisoned["model"] = built
                return backdoor_answer(built)

            answer = submit("backdoor", work)
            poisoned["job"] = answer["job"]
            return answer

    def backdoor_answer(built: PoisonedModel) -> dict:
        from advlab.lab.images import data_url

        return {**built.summary, "projection": data_url(built.projection_png)}

    @app.post("/api/backdoor/toggle", dependencies=guarded)
    async def toggle(body: ToggleRequest) -> dict:
        built: PoisonedModel | None = poisoned["model"]
        if built is None:
            raise LabError(409, "the poisoned model is not ready: press 'prepare the poisoned model' first")
        record = images.fetch(body.image, "image")
        shape = tuple(built.poisoned.data.shape)
        if tuple(record["x"].shape) != shape:
            raise LabError(400, f"the poisoned model is an MNIST model {shape}; pick an MNIST image")

        def work() -> dict:
            x = record["x"].to(device)
            shown = built.poisoned.trigger(x.unsqueeze(0))[0] if body.trigger else x
            classes = built.poisoned.data.classes
            top = panels.top_classes(built.model, shown, classes)
            return {"trigger": body.trigger, "png": image_url(shown), "prediction": top[0]["index"],
                    "prediction_name": top[0]["name"], "top5": top, "target": built.summary["target"],
                    "target_name": built.summary["target_name"], "label": record["label"]}

        return await run_in_threadpool(work)

    # ---- physical ---------------------------------------------------------------------------------

    @app.post("/api/jobs/physical", dependencies=guarded)
    async def physical(body: PhysicalRequest) -> dict:
        stored = results.fetch(body.result, "result")
        entry = entry_of(stored["model"])

        def work(model, job: Job) -> dict:
            return panels.physical(model, stored["adv"], stored["label"], entry.classes, body.draws, body.seed,
                                   stored["target"])

        return model_job("physical", entry, work)

    # ---- jobs ---------------------------------------------------------------------------------------

    def job_of(job_id: str) -> Job:
        job = runner.get(job_id)
        if job is None:
            raise LabError(404, f"unknown job {job_id!r}")
        return job

    @app.get("/api/jobs/{job_id}", dependencies=guarded)
    async def job_state(job_id: str) -> dict:
        return job_of(job_id).snapshot()

    @app.post("/api/jobs/{job_id}/cancel", dependencies=guarded)
    async def job_cancel(job_id: str) -> dict:
        job = job_of(job_id)
        job.cancel()
        return {"job": job.id, "status": job.status}

    @app.get("/api/jobs/{job_id}/events", dependencies=guarded)
    async def job_events(job_id: str, request: Request) -> StreamingResponse:
        job = job_of(job_id)

        async def stream():
            seen, quiet = -1, 0.0
            while True:
                snapshot = job.snapshot()
                if snapshot["version"] != seen:
                    seen, quiet = snapshot["version"], 0.0
                    yield f"data: {json.dumps(snapshot)}\n\n"
                    if snapshot["status"] in TERMINAL:
                        return
                elif quiet > 10:
                    quiet = 0.0
                    yield ": still working\n\n"  # a comment keeps proxies from closing the stream
                if await request.is_disconnected():
                    return
                await asyncio.sleep(0.1)
                quiet += 0.1

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    # ---- downloads ----------------------------------------------------------------------------------

    @app.get("/api/results/{result_id}/adversarial.png", dependencies=guarded)
    async def adversarial_png(result_id: str) -> Response:
        stored = results.fetch(result_id, "result")
        return Response(png_bytes(stored["adv"]), media_type="image/png",
                        headers={"Content-Disposition": f'attachment; filename="adversarial-{result_id}.png"'})

    @app.get("/api/results/{result_id}/numbers.json", dependencies=guarded)
    async def numbers_json(result_id: str) -> Response:
        stored = results.fetch(result_id, "result")
        numbers = {k: v for k, v in stored["numbers"].items() if k != "images"}
        numbers["adversarial_float32"] = encode_array(stored["adv"].unsqueeze(0))  # the exact image
        return Response(json.dumps(numbers, indent=1), media_type="application/json",
                        headers={"Content-Disposition": f'attachment; filename="numbers-{result_id}.json"'})

    @app.get("/api/results/{result_id}/triptych.png", dependencies=guarded)
    async def triptych_png(result_id: str) -> Response:
        stored = results.fetch(result_id, "result")
        entry = entry_of(stored["model"])

        def work() -> bytes:
            from advlab.lab.images import magnified_perturbation
            from advlab.report.figures import image_grid_figure

            x, adv, numbers = stored["x"], stored["adv"], stored["numbers"]
            perturbation, factor = magnified_perturbation(adv - x)
            adv_name = entry.classes[numbers["adversarial_prediction"]]
            titles = [f"clean: {entry.classes[stored['label']]}", f"perturbation x{factor:.1f}",
                      f"adversarial: {adv_name}"]
            with tempfile.TemporaryDirectory() as tmp:
                path = image_grid_figure(torch.stack([x, perturbation, adv]).cpu(), titles,
                                         Path(tmp) / "triptych.png", cols=3)
                return Path(path).read_bytes()

        png = await run_in_threadpool(work)
        return Response(png, media_type="image/png",
                        headers={"Content-Disposition": f'attachment; filename="triptych-{result_id}.png"'})

    return app
