"""A real RTSP server for generated clips: GStreamer's RTSP server, run as its own process.

Run with the system Python (``/usr/bin/python3``, which has ``gi``; the venv has not):
``python3 gst_rtsp_server.py PORT NAME=CLIP.avi [NAME=CLIP.avi ...]`` serves each
Motion-JPEG AVI at ``rtsp://127.0.0.1:PORT/NAME`` as H.264 in real time and prints ``ready``
once it listens. Debian: ``gir1.2-gst-rtsp-server-1.0``,
``gstreamer1.0-plugins-good`` (avidemux, jpegdec, rtph264pay), ``-ugly`` (x264enc).
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    """Serve the clips named on the command line until killed."""
    import gi  # type: ignore[import-not-found]

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer  # type: ignore[import-not-found]

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(argv[1])
    mounts = server.get_mount_points()
    for item in argv[2:]:
        name, _, path = item.partition("=")
        factory = GstRtspServer.RTSPMediaFactory()
        # One pipeline per client, so each starts the clip afresh; identity sync=true sends
        # frames in real time; H.264 as cameras send it (x264enc, gstreamer1.0-plugins-ugly).
        factory.set_launch(
            f'( filesrc location="{path}" ! avidemux ! jpegdec ! identity sync=true '
            "! videoconvert ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=10 "
            "! rtph264pay name=pay0 pt=96 config-interval=1 )"
        )
        factory.set_shared(False)
        mounts.add_factory(f"/{name}", factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{argv[1]}", flush=True)
        return 1
    print("ready", flush=True)
    GLib.MainLoop().run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
