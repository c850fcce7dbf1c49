# CPU image of unispeech-live: the project's own set-up (.ci/setup: Debian packages and a .venv
# with the pinned CPU build of torch), then the bundled demo.
#
#   docker build -t unispeech-live .
#   docker run --rm -it --init unispeech-live                   # TUI on the demo (no microphone in a container)
#   docker run --rm --init unispeech-live --headless            # the demo as JSON lines, then exit
#   docker run --rm --init -p 8765:8765 unispeech-live --serve 0.0.0.0:8765 --token SECRET
#
# --init gives the process a reaper as PID 1, so SIGTERM (docker stop) reaches run_live.py even
# while models load; it then stops as documented in docs/app.md (exit 143, files written).
# UNVERIFIED: no container engine runs on the development machines, so this file has never been
# built; it only repeats what .ci/setup does on a fresh Debian machine.
FROM debian:bookworm-slim

ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1
RUN apt-get update -q \
    && apt-get install -y -q --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/unispeech-live
COPY . .
RUN bash .ci/setup && rm -rf /var/lib/apt/lists/* /root/.cache/pip

# voiceprints and saved transcripts go to $XDG_DATA_HOME (mount a volume there to keep them)
RUN useradd --create-home --shell /usr/sbin/nologin speaker
USER speaker
ENV XDG_DATA_HOME=/home/speaker/.local/share
EXPOSE 8765
STOPSIGNAL SIGTERM
ENTRYPOINT [".venv/bin/python", "run_live.py"]
CMD []
