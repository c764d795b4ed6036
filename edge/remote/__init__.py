"""Remote inference: a policy server speaking openpi's websocket protocol (``legato serve``) and
the robot-side client that stands in for the chunk denoiser (``legato run --remote``).

- :mod:`edge.remote.wire`: the wire format (msgpack, numpy arrays as openpi's maps), bounded.
- :mod:`edge.remote.protocol`: what the server describes on connect (metadata) and how a request
  and a reply look; the checks a request must pass.
- :mod:`edge.remote.service`: one policy session, transport-free (the websockets server and the
  Ray Serve replicas both drive it).
- :mod:`edge.remote.server`: ``legato serve`` on the ``websockets`` package.
- :mod:`edge.remote.client`: :class:`~edge.remote.client.RemoteDenoiser`, the denoiser interface
  over the network, with reconnect.
- :mod:`edge.remote.replicas`: the same service as a Ray Serve deployment (``--replicas K``).
"""
