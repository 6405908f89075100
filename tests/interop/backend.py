#!/usr/bin/env python3
"""
A backend in another language, written from shared/PROTOCOL.md and the JSON Schemas in shared/schemas/ alone.

It declares the topology itself, stores originals in S3, publishes image, video and audio requests (two of them as bulk
work, on the bulk queues), cancels one job while it runs, sends one request the processors must refuse, validates every
update and result it receives against the schemas, and checks the outputs in S3. It prints one JSON report and exits 0 when every expectation held.

Debian packages: python3-pika, python3-jsonschema, python3-boto3.
Environment: RABBITMQ_URL, SYSTEM, S3_ENDPOINT, S3_BUCKET, S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY, SCHEMAS_DIR,
IMAGE_FILE (a JPEG), VIDEO_FILE (a short MP4), LONG_VIDEO_FILE (an MP4 long enough to cancel while it runs),
AUDIO_FILE (an MP3 titled "Interop" with an embedded cover).
"""
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid

import boto3
import jsonschema
import pika
from botocore.config import Config

TYPES = ("images", "videos", "audio")
# The schema names' prefix for each type (shared/schemas/<prefix>-request.json, <prefix>-result.json).
SCHEMA = {"images": "image", "videos": "video", "audio": "audio"}
# PROTOCOL.md section 5: extension and content type of each output format.
EXTENSIONS = {"webp": ("webp", "image/webp"), "jpeg": ("jpg", "image/jpeg"), "png": ("png", "image/png"),
              "avif": ("avif", "image/avif"), "mp4": ("mp4", "video/mp4"),
              "m3u8": ("m3u8", "application/vnd.apple.mpegurl"), "m4s": ("m4s", "video/mp4"), "vtt": ("vtt", "text/vtt"),
              "m4a": ("m4a", "audio/mp4"), "webm": ("webm", "audio/webm"), "json": ("json", "application/json")}
FINAL = ("completed", "failed", "cancelled")


def now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def names(system, kind):
    base = f"{system}.media.{kind}"
    return {"request": f"{base}.request", "bulk": f"{base}.bulk", "updates": f"{base}.updates",
            "results": f"{base}.results", "dead": f"{base}.dead"}


# PROTOCOL.md section 2a: the queue and the AMQP priority of each class of work.
CLASSES = {"interactive": ("request", 5), "bulk": ("bulk", 0)}


def declare_topology(channel, system):
    """PROTOCOL.md section 2, exactly: a different argument makes RabbitMQ refuse the declaration."""
    dead_letter = f"{system}.media.dead-letter"
    channel.exchange_declare(dead_letter, exchange_type="direct", durable=True, auto_delete=False)
    channel.exchange_declare(f"{system}.media.cancel", exchange_type="fanout", durable=True, auto_delete=False)
    for kind in TYPES:
        queues = names(system, kind)
        working = {
            "x-queue-type": "quorum",
            "x-delivery-limit": 5,
            "x-dead-letter-exchange": dead_letter,
            "x-dead-letter-routing-key": queues["dead"],
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }
        for role in ("request", "bulk", "updates", "results"):
            channel.queue_declare(queues[role], durable=True, arguments=working)
        channel.queue_declare(queues["dead"], durable=True, arguments={"x-queue-type": "quorum"})
        channel.queue_bind(queues["dead"], dead_letter, routing_key=queues["dead"])


class Backend:
    def __init__(self, env):
        self.system = env["SYSTEM"]
        self.bucket = env["S3_BUCKET"]
        self.schemas = {}
        for name in [f"{SCHEMA[t]}-{part}" for t in TYPES for part in ("request", "result")] + ["job-update", "cancel"]:
            with open(os.path.join(env["SCHEMAS_DIR"], f"{name}.json")) as f:
                schema = json.load(f)
            jsonschema.Draft7Validator.check_schema(schema)
            self.schemas[name] = jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker())
        self.s3 = boto3.client(
            "s3",
            endpoint_url=env["S3_ENDPOINT"],
            region_name="us-east-1",
            aws_access_key_id=env["S3_ACCESS_KEY_ID"],
            aws_secret_access_key=env["S3_SECRET_ACCESS_KEY"],
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
        )
        self.connection = pika.BlockingConnection(pika.URLParameters(env["RABBITMQ_URL"]))
        self.channel = self.connection.channel()
        self.channel.confirm_delivery()  # basic_publish raises when the broker nacks or returns a mandatory message
        declare_topology(self.channel, self.system)
        self.jobs = {}  # jobId -> what we know of it
        self.problems = []

    # ── Sending ──────────────────────────────────────────────────────────────────────────────────────────────────

    def publish(self, exchange, routing_key, body, message_type, job_id, mandatory=True, priority=None):
        properties = pika.BasicProperties(
            priority=priority,
            delivery_mode=2,
            content_type="application/json",
            message_id=str(uuid.uuid4()),
            correlation_id=job_id,
            type=message_type,
            timestamp=int(time.time()),
        )
        self.channel.basic_publish(exchange, routing_key, json.dumps(body).encode(), properties, mandatory=mandatory)

    def submit(self, kind, path, source_format, recipe, expect, store=True, priority="interactive"):
        job_id, media_id = str(uuid.uuid4()), str(uuid.uuid4())
        key = f"{self.system}/py/originals/{media_id}"
        with open(path, "rb") as f:
            data = f.read()
        if store:
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=data)
        request = {
            "version": 1,
            "jobId": job_id,
            "mediaId": media_id,
            "source": {"bucket": self.bucket, "key": key, "format": source_format, "size": len(data)},
            "output": {"bucket": self.bucket, "prefix": f"{self.system}/py/outputs/{job_id}"},
            "recipe": recipe,
        }
        self.check(f"{SCHEMA[kind]}-request", request, "our own request")
        role, amqp_priority = CLASSES[priority]
        self.publish("", names(self.system, kind)[role], request, "job.request", job_id, priority=amqp_priority)
        self.jobs[job_id] = {"kind": kind, "request": request, "expect": expect, "updates": [], "result": None}
        return job_id

    def cancel(self, job_id):
        """PROTOCOL.md section 7: the marker first, then the broadcast (not mandatory)."""
        prefix = self.jobs[job_id]["request"]["output"]["prefix"]
        self.s3.put_object(Bucket=self.bucket, Key=f"{prefix}/.cancelled", Body=b"")
        cancel = {"version": 1, "jobId": job_id, "at": now()}
        self.check("cancel", cancel, "our own cancel")
        self.publish(f"{self.system}.media.cancel", "", cancel, "job.cancel", job_id, mandatory=False)
        self.jobs[job_id]["cancelled_at"] = time.time()

    # ── Receiving ────────────────────────────────────────────────────────────────────────────────────────────────

    def check(self, schema, message, what):
        errors = sorted(self.schemas[schema].iter_errors(message), key=lambda e: list(e.path))
        for error in errors:
            self.problems.append(f"{what} does not match {schema}.json at {'/'.join(map(str, error.path)) or '(root)'}: {error.message}")
        return not errors

    def on_update(self, channel, method, properties, body):
        update = json.loads(body)
        job = self.jobs.get(update.get("jobId"))
        self.check("job-update", update, f"an update of job {update.get('jobId')}")
        if properties.correlation_id != update.get("jobId"):
            self.problems.append(f"an update's correlation_id {properties.correlation_id} is not its jobId")
        if job is not None:
            job["updates"].append(update)
        channel.basic_ack(method.delivery_tag)

    def on_result(self, kind):
        def handle(channel, method, properties, body):
            result = json.loads(body)
            job = self.jobs.get(result.get("jobId"))
            self.check(f"{SCHEMA[kind]}-result", result, f"the result of job {result.get('jobId')}")
            if job is None:
                self.problems.append(f"a result for a job we never sent: {result.get('jobId')}")
            elif job["result"] is None:
                job["result"] = result  # the first result of a job is its outcome
                job["result_at"] = time.time()
            channel.basic_ack(method.delivery_tag)
        return handle

    def consume(self):
        for kind in TYPES:
            queues = names(self.system, kind)
            self.channel.basic_consume(queues["updates"], self.on_update)
            self.channel.basic_consume(queues["results"], self.on_result(kind))

    def wait(self, until, timeout):
        deadline = time.time() + timeout
        while not until():
            if time.time() > deadline:
                return False
            self.connection.process_data_events(time_limit=0.2)
        return True

    # ── Checking ─────────────────────────────────────────────────────────────────────────────────────────────────

    def keys_under(self, prefix):
        listed = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=f"{prefix}/")
        return sorted(o["Key"] for o in listed.get("Contents", []))

    def verify(self, job_id):
        job = self.jobs[job_id]
        result, expect, request = job["result"], job["expect"], job["request"]
        prefix = request["output"]["prefix"]
        label = f"{job['kind']} job {job_id} ({expect['label']})"
        if result is None:
            return self.problems.append(f"{label}: no result")
        if result["status"] != expect["status"]:
            return self.problems.append(f"{label}: {result['status']} {result.get('error')}, expected {expect['status']}")
        if expect.get("code") and result["error"]["code"] != expect["code"]:
            self.problems.append(f"{label}: error {result['error']}, expected code {expect['code']}")
        finals = [u for u in job["updates"] if u["status"] != "processing"]
        if expect["status"] != "failed" or expect.get("code") != "invalid_request":
            if not finals or finals[-1]["status"] != result["status"]:
                self.problems.append(f"{label}: the final update does not match the result")
            progress = [u["progress"] for u in job["updates"] if u["status"] == "processing"]
            if progress != sorted(progress):
                self.problems.append(f"{label}: progress went back: {progress}")
        if result["status"] == "completed":
            stored = self.keys_under(prefix)
            want = sorted(o["key"] for o in result["outputs"])
            if stored != want:
                self.problems.append(f"{label}: S3 holds {stored}, the result names {want}")
            for output in result["outputs"]:
                fmt = expect["formats"][output["name"]]
                extension, content_type = EXTENSIONS[fmt]
                if output["key"] != f"{prefix}/{output['name']}.{extension}" or output["contentType"] != content_type:
                    self.problems.append(f"{label}: output {output} is not at {prefix}/{output['name']}.{extension} as {content_type}")
                head = self.s3.head_object(Bucket=self.bucket, Key=output["key"])
                if head["ContentLength"] != output["size"] or head["ContentType"] != content_type:
                    self.problems.append(f"{label}: S3 has {output['key']} as {head['ContentLength']} bytes of {head['ContentType']}")
            names_made = sorted(o["name"] for o in result["outputs"])
            if names_made != sorted(expect["outputs"]):
                self.problems.append(f"{label}: made {names_made}, expected {sorted(expect['outputs'])}")
            made = {o["name"]: o for o in result["outputs"]}
            for name, (width, height) in expect.get("sizes", {}).items():
                if name in made and (made[name]["width"], made[name]["height"]) != (width, height):
                    self.problems.append(f"{label}: {name} is {made[name]['width']}x{made[name]['height']}, expected {width}x{height}")
            for name, set_name in expect.get("sets", {}).items():
                if name in made and made[name].get("set") != set_name:
                    self.problems.append(f"{label}: {name} is not marked as an output of set {set_name}: {made[name]}")
            for field in expect.get("metadata", []):
                if field not in result["metadata"]:
                    self.problems.append(f"{label}: the metadata has no {field}: {result['metadata']}")
            if "hls" in expect:
                self.check_hls(label, result, expect["hls"])
            if "audio" in expect:
                self.check_audio(label, result, expect["audio"])
        if result["status"] == "cancelled":
            left = [k for k in self.keys_under(prefix) if not k.endswith("/.cancelled")]
            if left:
                self.problems.append(f"{label}: outputs left after the cancel: {left}")

    def text_of(self, key):
        return self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read().decode()

    def check_hls(self, label, result, expect):
        """PROTOCOL.md section 4: the master lists each rung with its attributes; each rung's playlist is a VOD one
        over its one segment file, by byte range; the storyboard covers the video; and it all plays from the store as
        written (its addresses are relative), which ffmpeg checks on a copy of the outputs."""
        made = {o["name"]: o for o in result["outputs"]}
        master = self.text_of(made[expect["master"]]["key"])
        variants = re.findall(r"#EXT-X-STREAM-INF:([^\n]*)\n([^\n]+)", master)
        if sorted(uri for _, uri in variants) != sorted(f"{r}.m3u8" for r in expect["rungs"]):
            self.problems.append(f"{label}: the master names {[u for _, u in variants]}")
        for attributes, _ in variants:
            for attribute in ("BANDWIDTH=", "AVERAGE-BANDWIDTH=", "RESOLUTION=", 'CODECS="avc1.', "FRAME-RATE="):
                if attribute not in attributes:
                    self.problems.append(f"{label}: a variant lacks {attribute}: {attributes}")
        duration = result["metadata"]["durationSeconds"]
        for rung in expect["rungs"]:
            playlist = self.text_of(made[rung]["key"])
            segments_file = f"{rung}-media.m4s"
            size = made[f"{rung}-media"]["size"]
            target = int(re.search(r"#EXT-X-TARGETDURATION:(\d+)", playlist).group(1))
            extinf = [float(d) for d in re.findall(r"#EXTINF:([\d.]+),", playlist)]
            ranges = [(int(n), int(o)) for n, o in re.findall(r"#EXT-X-BYTERANGE:(\d+)@(\d+)", playlist)]
            uris = {line for line in playlist.splitlines() if line and not line.startswith("#")}
            if "#EXT-X-PLAYLIST-TYPE:VOD" not in playlist or "#EXT-X-ENDLIST" not in playlist:
                self.problems.append(f"{label}: {rung} is not a finished VOD playlist")
            if uris != {segments_file} or f'#EXT-X-MAP:URI="{segments_file}"' not in playlist:
                self.problems.append(f"{label}: {rung} does not address its segments as {segments_file}: {uris}")
            if any(round(d) > target for d in extinf) or target > expect["segment"] + 1:
                self.problems.append(f"{label}: {rung} has segments {extinf} against a target of {target}")
            if abs(sum(extinf) - duration) > target:
                self.problems.append(f"{label}: {rung} lasts {sum(extinf)} s, the video {duration} s")
            if not ranges or any(o + n > size for n, o in ranges):
                self.problems.append(f"{label}: {rung}'s byte ranges fall outside its {size} bytes")
        vtt = self.text_of(made[expect["storyboard"]]["key"])
        cues = re.findall(r"([\d:.]+) --> ([\d:.]+)\n(\S+)#xywh=\d+,\d+,\d+,\d+", vtt)
        clock = lambda t: sum(float(p) * 60 ** i for i, p in enumerate(reversed(t.split(":"))))
        if not vtt.startswith("WEBVTT") or not cues or {c[2] for c in cues} != {f"{expect['storyboard']}-sprite.jpg"}:
            self.problems.append(f"{label}: the storyboard is not WebVTT over its sprite: {vtt[:200]!r}")
        elif clock(cues[0][0]) != 0 or abs(clock(cues[-1][1]) - duration) > 0.05:
            self.problems.append(f"{label}: the storyboard covers {cues[0][0]} to {cues[-1][1]}, the video {duration} s")
        with tempfile.TemporaryDirectory() as folder:
            for output in result["outputs"]:
                self.s3.download_file(self.bucket, output["key"], os.path.join(folder, output["key"].rsplit("/", 1)[1]))
            played = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", os.path.join(folder, f"{expect['master']}.m3u8"),
                                     "-map", "0", "-f", "null", "-"], capture_output=True, text=True)
            if played.returncode != 0 or played.stderr.strip():
                self.problems.append(f"{label}: ffmpeg could not play the stream from the store: {played.stderr[-500:]}")

    def check_audio(self, label, result, expect):
        """PROTOCOL.md section 4: the peaks are audiowaveform JSON v2 covering what decodes, within one pixel; the
        encodings hold one audio stream and nothing else, last as long, and measure near the loudness target (or got
        the gain the metadata names); the cover is a picture."""
        made = {o["name"]: o for o in result["outputs"]}
        metadata = result["metadata"]
        duration = metadata["durationSeconds"]
        peaks = json.loads(self.text_of(made[expect["peaks"]]["key"]))
        if (peaks.get("version"), peaks.get("channels"), peaks.get("bits")) != (2, 1, 8) or len(peaks["data"]) != 2 * peaks["length"]:
            self.problems.append(f"{label}: the peaks are not audiowaveform v2 with 8 bits: {str(peaks)[:200]}")
        elif abs(peaks["length"] * peaks["samples_per_pixel"] / peaks["sample_rate"] - duration) > peaks["samples_per_pixel"] / peaks["sample_rate"]:
            self.problems.append(f"{label}: the peaks cover {peaks['length']} pixels of {peaks['samples_per_pixel']}, the audio {duration} s")
        if metadata["tags"].get("title") != expect["title"] or metadata["hasCover"] is not True:
            self.problems.append(f"{label}: the tags or the cover were not read: {metadata}")
        with tempfile.TemporaryDirectory() as folder:
            for name in expect["encodings"]:
                path = os.path.join(folder, made[name]["key"].rsplit("/", 1)[1])
                self.s3.download_file(self.bucket, made[name]["key"], path)
                probe = json.loads(subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", path],
                                                  capture_output=True, text=True).stdout)
                kinds = [s["codec_type"] for s in probe["streams"]]
                if kinds != ["audio"] or abs(float(probe["format"]["duration"]) - duration) > 0.05:
                    self.problems.append(f"{label}: {name} holds {kinds} for {probe['format'].get('duration')} s, the audio {duration} s")
                measured = subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-nostats", "-i", path, "-af", "ebur128", "-f", "null", "-"],
                                          capture_output=True, text=True).stderr
                lufs = float(re.findall(r"I:\s+(-?[\d.]+) LUFS", measured)[-1])
                wanted = metadata["loudness"]["integratedLufs"] + metadata["loudness"]["gainDb"]
                if abs(lufs - wanted) > 1:
                    self.problems.append(f"{label}: {name} measures {lufs} LUFS, the metadata gives {wanted}")
        if made[expect["cover"]]["contentType"] != "image/webp" or not made[expect["cover"]].get("width"):
            self.problems.append(f"{label}: the cover is not a picture: {made[expect['cover']]}")

    def dead_letters(self, kind):
        """Takes the messages off the type's dead-letter queue: (x-first-death-reason, body) pairs."""
        found = []
        while True:
            method, properties, body = self.channel.basic_get(names(self.system, kind)["dead"], auto_ack=True)
            if method is None:
                return found
            found.append(((properties.headers or {}).get("x-first-death-reason"), body))


def main():
    env = os.environ
    backend = Backend(env)
    backend.consume()
    image_recipe = {"outputs": [{"name": "thumb", "format": "webp", "width": 160, "height": 160},
                                {"name": "small", "format": "jpeg", "width": 64, "height": 64, "quality": 70}]}
    video_recipe = {"poster": {"name": "poster", "width": 160, "height": 160},
                    "renditions": [{"name": "low", "height": 120}, {"name": "high", "height": 2160}]}
    # The long video first: the video processor takes one job at a time, and this one is cancelled while it runs.
    long_job = backend.submit("videos", env["LONG_VIDEO_FILE"], "mp4", video_recipe,
                              {"label": "cancelled while it runs", "status": "cancelled"})
    backend.submit("images", env["IMAGE_FILE"], "jpeg", image_recipe,
                   {"label": "a photo", "status": "completed", "outputs": ["thumb", "small"], "formats": {"thumb": "webp", "small": "jpeg"}})
    backend.submit("videos", env["VIDEO_FILE"], "mp4", video_recipe,
                   {"label": "a clip; the 2160p rung is above it", "status": "completed", "outputs": ["poster", "low"],
                    "formats": {"poster": "webp", "low": "mp4"}})
    # PROTOCOL.md section 4: a stream only (no MP4), HLS in 2 s segments, and a storyboard.
    stream_recipe = {"poster": {"name": "poster", "width": 160, "height": 160},
                     "renditions": [{"name": "low", "height": 120}, {"name": "mid", "height": 180}],
                     "mp4": False, "hls": {"name": "stream", "segmentSeconds": 2}, "storyboard": {"name": "scrub", "width": 64}}
    backend.submit("videos", env["VIDEO_FILE"], "mp4", stream_recipe,
                   {"label": "a stream and a storyboard", "status": "completed",
                    "outputs": ["poster", "stream", "stream-low", "stream-low-media", "stream-mid", "stream-mid-media",
                                "scrub", "scrub-sprite"],
                    "formats": {"poster": "webp", "stream": "m3u8", "stream-low": "m3u8", "stream-low-media": "m4s",
                                "stream-mid": "m3u8", "stream-mid-media": "m4s", "scrub": "vtt", "scrub-sprite": "jpeg"},
                    "hls": {"master": "stream", "rungs": ["stream-low", "stream-mid"], "segment": 2, "storyboard": "scrub"}})
    # PROTOCOL.md section 4: a cover crop (attention), a responsive set (a width above the 400 px source is skipped),
    # and AVIF at a chosen effort; the metadata carries a ThumbHash and the dominant colour.
    chosen_recipe = {"outputs": [{"name": "avatar", "format": "webp", "width": 64, "height": 64, "fit": "cover", "position": "attention"},
                                 {"name": "set", "format": "webp", "widths": [32, 64, 8000]},
                                 {"name": "still", "format": "avif", "width": 80, "height": 80, "effort": 1}]}
    backend.submit("images", env["IMAGE_FILE"], "jpeg", chosen_recipe,
                   {"label": "a crop, a set and AVIF", "status": "completed", "outputs": ["avatar", "set-32", "set-64", "still"],
                    "formats": {"avatar": "webp", "set-32": "webp", "set-64": "webp", "still": "avif"},
                    "sizes": {"avatar": (64, 64), "set-32": (32, 24), "set-64": (64, 48), "still": (80, 60)},
                    "sets": {"set-32": "set", "set-64": "set"}, "metadata": ["thumbhash", "dominantColor"]},
                   priority="bulk")
    # PROTOCOL.md section 4: sound, normalised, with its waveform and its cover art.
    audio_recipe = {"aac": {"name": "sound", "bitrate": 96}, "opus": {"name": "sound-opus"}, "peaks": {"name": "wave", "maxPairs": 500},
                    "cover": {"name": "art", "width": 100, "height": 100}, "loudness": {"targetLufs": -18}}
    backend.submit("audio", env["AUDIO_FILE"], "mp3", audio_recipe,
                   {"label": "a song with its cover", "status": "completed", "outputs": ["sound", "sound-opus", "wave", "art"],
                    "formats": {"sound": "m4a", "sound-opus": "webm", "wave": "json", "art": "webp"},
                    "audio": {"peaks": "wave", "encodings": ["sound", "sound-opus"], "cover": "art", "title": "Interop"}},
                   priority="bulk")
    missing = backend.submit("images", env["IMAGE_FILE"], "jpeg", image_recipe,
                             {"label": "a missing original", "status": "failed", "code": "source_missing"}, store=False)
    # A request that breaks a rule (format "jpg") is refused with a result we can read, and dead-lettered.
    refused_id = str(uuid.uuid4())
    refused = dict(backend.jobs[missing]["request"], jobId=refused_id)
    refused["recipe"] = {"outputs": [{"name": "thumb", "format": "jpg", "width": 64, "height": 64}]}
    backend.publish("", names(backend.system, "images")["request"], refused, "job.request", refused_id)
    backend.jobs[refused_id] = {"kind": "images", "request": refused, "updates": [], "result": None,
                                "expect": {"label": "format jpg", "status": "failed", "code": "invalid_request"}}

    running = lambda: any(u["stage"] == "processing" for u in backend.jobs[long_job]["updates"])
    if backend.wait(running, 60):
        backend.cancel(long_job)
    else:
        backend.problems.append("the long video never reported the processing stage")
    all_final = lambda: all(job["result"] is not None for job in backend.jobs.values())
    if not backend.wait(all_final, 120):
        backend.problems.append("not every job had a result within 120 s")
    # Updates and results travel on queues of their own: a job's final update may arrive just after its result.
    updated = lambda: all(any(u["status"] != "processing" for u in job["updates"])
                          for job in backend.jobs.values() if job["expect"].get("code") != "invalid_request")
    backend.wait(updated, 10)
    for job_id in backend.jobs:
        backend.verify(job_id)
    refusal = (backend.jobs[refused_id]["result"] or {}).get("error", {}).get("message", "")
    if "format" not in refusal:
        backend.problems.append(f"the refusal does not name the broken rule: {refusal!r}")
    dead = backend.dead_letters("images")
    if not any(reason == "rejected" and json.loads(body).get("jobId") == refused_id for reason, body in dead):
        backend.problems.append(f"the refused request is not on the dead-letter queue as rejected: {dead}")

    cancelled = backend.jobs[long_job]
    report = {
        "jobs": {job["expect"]["label"]: (job["result"] or {}).get("status") for job in backend.jobs.values()},
        "updates": sum(len(job["updates"]) for job in backend.jobs.values()),
        "cancelSeconds": round(max(0.0, (cancelled.get("result_at") or time.time()) - cancelled.get("cancelled_at", time.time())), 2),
        "problems": backend.problems,
    }
    print(json.dumps(report))
    backend.connection.close()
    return 0 if not backend.problems else 1


if __name__ == "__main__":
    sys.exit(main())
