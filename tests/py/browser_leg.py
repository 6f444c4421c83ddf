#!/usr/bin/env python3
"""A browser-like WebRTC leg for the relay's end-to-end tests: aiortc (full ICE, DTLS-SRTP).

stdin/stdout carry one JSON object per line:
  --role offer:  prints {"sdp": OFFER}, then reads {"sdp": ANSWER}
  --role answer: reads {"sdp": OFFER}, then prints {"sdp": ANSWER}
It then sends PCMU audio (a known pattern: each 20 ms frame one constant sample value) for
--seconds and prints {"summary": {...}}: ICE/DTLS/connection states, the RTP payloads it sent
(as encoded, hex) and the RTP payloads it received (after SRTP, hex), so the test can check the
bytes both ways. No STUN/TURN server is configured: nothing leaves the test's namespaces.
"""

import argparse
import asyncio
import json
import struct
import sys

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.codecs import g711
from aiortc.mediastreams import AudioStreamTrack
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtcrtpsender import RTCRtpSender

SENT = []
RECEIVED = []


def record_encoder():
    original = g711.PcmEncoder.encode

    def encode(self, frame, force_keyframe=False):
        payloads, ts = original(self, frame, force_keyframe)
        SENT.extend(p.hex() for p in payloads)
        return payloads, ts

    g711.PcmEncoder.encode = encode


def record_receiver():
    original = RTCRtpReceiver._handle_rtp_packet

    async def handle(self, packet, arrival_time_ms):
        RECEIVED.append({"seq": packet.sequence_number, "pt": packet.payload_type,
                         "payload": packet.payload.hex()})
        return await original(self, packet, arrival_time_ms)

    RTCRtpReceiver._handle_rtp_packet = handle


class PatternTrack(AudioStreamTrack):
    """20 ms frames of 8 kHz mono s16; frame k holds one value, cycling through 16 levels."""

    def __init__(self):
        super().__init__()
        self.n = 0

    async def recv(self):
        frame = await super().recv()
        k = self.n
        self.n += 1
        value = ((k % 16) + 1) * 1500 * (1 if k % 2 else -1)
        frame.planes[0].update(struct.pack("<h", value) * frame.samples)
        return frame


def send(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def read_line():
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    if not line:
        raise SystemExit("browser_leg: stdin closed before the SDP came")
    return json.loads(line)["sdp"]


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--role", choices=["offer", "answer"], required=True)
    ap.add_argument("--seconds", type=float, default=4.0)
    args = ap.parse_args()
    record_encoder()
    record_receiver()

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    states = {"ice": [], "connection": []}
    pc.on("iceconnectionstatechange", lambda: states["ice"].append(pc.iceConnectionState))
    pc.on("connectionstatechange", lambda: states["connection"].append(pc.connectionState))
    pc.on("track", lambda track: asyncio.ensure_future(drain(track)))

    def pcmu_only(transceiver):
        caps = RTCRtpSender.getCapabilities("audio")
        transceiver.setCodecPreferences([c for c in caps.codecs if c.mimeType == "audio/PCMU"])

    if args.role == "offer":
        t = pc.addTransceiver(PatternTrack(), direction="sendrecv")
        pcmu_only(t)
        await pc.setLocalDescription(await pc.createOffer())
        send({"sdp": pc.localDescription.sdp})
        await pc.setRemoteDescription(RTCSessionDescription(await read_line(), "answer"))
    else:
        await pc.setRemoteDescription(RTCSessionDescription(await read_line(), "offer"))
        for t in pc.getTransceivers():
            t.sender.replaceTrack(PatternTrack())
            t.direction = "sendrecv"
            pcmu_only(t)
        await pc.setLocalDescription(await pc.createAnswer())
        send({"sdp": pc.localDescription.sdp})

    await asyncio.sleep(args.seconds)
    dtls = [t.sender.transport.state if t.sender.transport else None
            for t in pc.getTransceivers()]
    summary = {"ice": states["ice"], "connection": states["connection"], "dtls": dtls,
               "sent": SENT, "received": RECEIVED}
    send({"summary": summary})
    await pc.close()


async def drain(track):
    try:
        while True:
            await track.recv()
    except Exception:
        pass


if __name__ == "__main__":
    asyncio.run(main())
