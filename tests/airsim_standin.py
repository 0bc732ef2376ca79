"""A stand-in AirSim server for tests: msgpack-RPC over TCP on 127.0.0.1 (ephemeral port, background
thread) implementing exactly the calls envs/drone/airsim_env.py makes, over a tiny kinematic world in
AirSim's NED frame (x north, y east, z down).

World: the vehicle starts at ``start`` (NED, on the ground); ``takeoff`` lifts it 3 m; ``moveByVelocity``
integrates position and yaw for ``duration`` (sim time only, it returns at once); a wall fills
x >= ``wall_x``: crossing it stops the vehicle and reports a collision; the depth image reads the
distance to that wall (so it shrinks as the vehicle flies north). Handlers have AirSim's exact
arities and check the struct maps (YawMode, ImageRequest, Pose), so a wrong argument order or
encoding is an RPC error, as it is with rpclib. Every call is recorded in ``calls``.
"""
from __future__ import annotations

import math
import socketserver
import threading

import msgpack


class AirSimStandIn:
    def __init__(self, wall_x: float = 6.0, image_hw: tuple[int, int] = (30, 40), start=(0.0, 0.0, 0.0),
                 ground_contact_at_takeoff: bool = False):
        self.wall_x, self.image_hw, self.start = wall_x, image_hw, tuple(float(s) for s in start)
        # real AirSim: a drone resting on the ground reports has_collided (old stamp) after takeoff
        self.ground_contact_at_takeoff = ground_contact_at_takeoff
        self.calls: list[tuple[str, list]] = []
        self.lock = threading.Lock()
        self.time_ns = 1_000_000_000
        self._reset_world()
        self.collision_stamp = 0
        standin = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                unpacker = msgpack.Unpacker(raw=False)
                packer = msgpack.Packer()
                while True:
                    try:
                        data = self.request.recv(1 << 16)
                    except OSError:
                        return
                    if not data:
                        return
                    unpacker.feed(data)
                    for msg in unpacker:
                        if msg[0] != 0:        # only requests are answered (notifications ignored)
                            continue
                        _, msgid, method, params = msg
                        error, result = standin.dispatch(method, params)
                        self.request.sendall(packer.pack([1, msgid, error, result]))

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads, allow_reuse_address = True, True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # ------------------------------------------------------------------------------ plumbing
    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def dispatch(self, method: str, params: list):
        with self.lock:
            self.calls.append((method, params))
            fn = getattr(self, "rpc_" + method, None)
            if fn is None:
                return f"rpc method not found: {method}", None
            try:
                return None, fn(*params)
            except (TypeError, KeyError, ValueError, AssertionError) as e:   # rpclib: bad args -> error
                return f"{method}: {type(e).__name__}: {e}", None

    def called(self, method: str) -> list[list]:
        return [p for m, p in self.calls if m == method]

    def _reset_world(self):
        self.pos, self.vel, self.yaw, self.yaw_rate = list(self.start), [0.0] * 3, 0.0, 0.0
        self.api_control = self.armed = self.collided = self.crashed = False

    # -------------------------------------------------------------- AirSim RPC methods (NED)
    def rpc_ping(self):
        return True

    def rpc_reset(self):
        self._reset_world()
        self.time_ns += 1_000_000

    def rpc_enableApiControl(self, is_enabled, vehicle_name):
        assert isinstance(is_enabled, bool) and isinstance(vehicle_name, str)
        self.api_control = is_enabled

    def rpc_armDisarm(self, arm, vehicle_name):
        assert isinstance(arm, bool) and isinstance(vehicle_name, str)
        self.armed = arm
        return True

    def rpc_takeoff(self, timeout_sec, vehicle_name):
        assert self.api_control and self.armed, "vehicle is not under API control / armed"
        if self.ground_contact_at_takeoff:
            self.collided, self.collision_stamp = True, self.time_ns
        self.pos[2] = min(self.pos[2], self.start[2] - 3.0)
        self.time_ns += 1_000_000_000
        return True

    def rpc_moveByVelocity(self, vx, vy, vz, duration, drivetrain, yaw_mode, vehicle_name):
        assert self.api_control, "API control is not enabled"
        assert set(yaw_mode) >= {"is_rate", "yaw_or_rate"} and yaw_mode["is_rate"] is True
        assert drivetrain in (0, 1) and isinstance(vehicle_name, str)
        self.vel, self.yaw_rate = [float(vx), float(vy), float(vz)], math.radians(yaw_mode["yaw_or_rate"])
        steps = max(1, round(duration / 0.01))
        for _ in range(steps):
            if self.crashed:
                break
            for i in range(3):
                self.pos[i] += self.vel[i] * duration / steps
            self.yaw += self.yaw_rate * duration / steps
            self.time_ns += int(duration / steps * 1e9)
            if self.pos[0] >= self.wall_x:
                self.pos[0], self.collision_stamp = self.wall_x, self.time_ns
                self.collided = self.crashed = True
        return True

    def rpc_simGetImages(self, requests, vehicle_name):
        out = []
        for r in requests:
            assert set(r) >= {"camera_name", "image_type", "pixels_as_float", "compress"}, r
            assert r["pixels_as_float"] and r["image_type"] in (1, 2), "stand-in serves float depth only"
            h, w = self.image_hw
            ahead = max(self.wall_x - self.pos[0], 0.05)
            data = [standin_depth(ahead, i, j, h, w) for i in range(h) for j in range(w)]
            out.append({"image_data_uint8": b"", "image_data_float": data, "camera_position": _vec(self.pos),
                        "camera_orientation": _quat(self.yaw), "time_stamp": self.time_ns, "message": "",
                        "pixels_as_float": True, "compress": False, "width": w, "height": h,
                        "image_type": r["image_type"]})
        return out

    def rpc_simGetCollisionInfo(self, vehicle_name):
        return {"has_collided": self.collided, "normal": _vec((-1, 0, 0)), "impact_point": _vec(self.pos),
                "position": _vec(self.pos), "penetration_depth": 0.0, "time_stamp": self.collision_stamp,
                "object_name": "wall" if self.collided else "", "object_id": 1 if self.collided else -1}

    def rpc_getMultirotorState(self, vehicle_name):
        zero = _vec((0, 0, 0))
        kin = {"position": _vec(self.pos), "orientation": _quat(self.yaw), "linear_velocity": _vec(self.vel),
               "angular_velocity": _vec((0, 0, self.yaw_rate)), "linear_acceleration": zero,
               "angular_acceleration": zero}
        return {"collision": self.rpc_simGetCollisionInfo(vehicle_name), "kinematics_estimated": kin,
                "gps_location": {"latitude": 0.0, "longitude": 0.0, "altitude": 0.0},
                "timestamp": self.time_ns, "landed_state": 1, "rc_data": {}, "ready": True,
                "ready_message": "", "can_arm": True}

    def rpc_simSetVehiclePose(self, pose, ignore_collision, vehicle_name):
        p, q = pose["position"], pose["orientation"]
        self.pos = [p["x_val"], p["y_val"], p["z_val"]]
        self.yaw = math.atan2(2 * (q["w_val"] * q["z_val"] + q["x_val"] * q["y_val"]),
                              1 - 2 * (q["y_val"] ** 2 + q["z_val"] ** 2))


def standin_depth(ahead: float, i: int, j: int, h: int, w: int) -> float:
    """DepthPerspective of pixel (i, j) [h, w] for a wall ``ahead`` metres away, seen head-on with a
    90 degree field of view: the distance along the pixel's ray grows towards the image edges."""
    return ahead * math.sqrt(1.0 + (2 * (j + 0.5) / w - 1) ** 2 + (2 * (i + 0.5) / h - 1) ** 2)


def _vec(v):
    return {"x_val": float(v[0]), "y_val": float(v[1]), "z_val": float(v[2])}


def _quat(yaw):   # NED yaw about the down axis
    return {"w_val": math.cos(yaw / 2), "x_val": 0.0, "y_val": 0.0, "z_val": math.sin(yaw / 2)}
