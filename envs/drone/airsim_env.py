"""AirSim / Cosys-AirSim backend of envs/drone/drone_env.py, over AirSim's msgpack-RPC (TCP port 41451).

AirSim is a separate program (an Unreal binary with settings.json ``"SimMode": "Multirotor"``); this
module is its client. ``cosysairsim.MultirotorClient`` (or ``airsim.MultirotorClient``) is used when
importable (``client="auto"``). Their RPC layers are msgpack-rpc packages on tornado (airsim 1.8.1's
pins tornado 4 and does not install on Python 3.11), so a minimal built-in client speaks the same wire
protocol with only ``msgpack``: request [0, msgid, method, params], response [1, msgid, error, result];
structs travel as maps of their field names (the reference clients pack ``obj.__dict__``). Method
names, argument order and units follow AirSim's PythonClient (client.py / types.py); the tests run
both the built-in client and, where installed, cosysairsim's against tests/airsim_standin.py.

Frames: AirSim is NED (x north, y east, z down; body front-right-down); the env's world is z-up
(x north, y west, z up; body front-left-up). The map between them is a rotation by pi about x, its own
inverse, applied in exactly one place: ``ned_flip``/``quat_ned_flip``. Yaw rates flip sign, and
AirSim's YawMode takes degrees/s.
"""
from __future__ import annotations

import socket
from dataclasses import dataclass

import numpy as np

from envs.scene.depth_camera import Primitives
from envs.drone.kinematics import Kinematics


class AirSimConnectionError(ConnectionError, RuntimeError):
    """AirSim could not be reached (nothing listening, or no answer to ping)."""


class AirSimRPCError(RuntimeError):
    """The server answered a call with an error."""


def ned_flip(v) -> np.ndarray:
    """NED <-> env frame for a vector [3] (x, y, z) -> (x, -y, -z); the map is its own inverse."""
    x, y, z = v
    return np.array([x, -y, -z], dtype=np.float64)


def quat_ned_flip(w: float, x: float, y: float, z: float) -> np.ndarray:
    """Orientation quaternion NED <-> env frame (conjugation by the pi-rotation about x): (w, x, -y, -z)."""
    return np.array([w, x, -y, -z], dtype=np.float64)


def _yaw(q) -> float:
    w, x, y, z = q
    return float(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))


# ------------------------------------------------------------------ minimal AirSim-compatible client
class _Struct:
    """A msgpack map as an object: nested maps become _Struct, like AirSim's from_msgpack."""

    def __init__(self, fields: dict):
        for k, v in fields.items():
            setattr(self, str(k), _Struct(v) if isinstance(v, dict) else v)

    def __repr__(self):
        return f"_Struct({vars(self)})"


class _Msg:
    """Base of the request structs: packed as the map of their fields, like AirSim's MsgpackMixin."""

    def to_msgpack(self, *args, **kwargs):
        return self.__dict__


class ImageType:
    Scene, DepthPlanar, DepthPerspective, DepthVis = 0, 1, 2, 3


class DrivetrainType:
    MaxDegreeOfFreedom, ForwardOnly = 0, 1


class YawMode(_Msg):
    def __init__(self, is_rate: bool = True, yaw_or_rate: float = 0.0):   # degrees or degrees/s
        self.is_rate, self.yaw_or_rate = bool(is_rate), float(yaw_or_rate)


class ImageRequest(_Msg):
    def __init__(self, camera_name, image_type: int, pixels_as_float: bool = False, compress: bool = True):
        self.camera_name, self.image_type = str(camera_name), int(image_type)
        self.pixels_as_float, self.compress = bool(pixels_as_float), bool(compress)
        self.annotation_name = ""   # Cosys-AirSim's extra field; map-decoding servers ignore unknown keys


class Vector3r(_Msg):
    def __init__(self, x_val=0.0, y_val=0.0, z_val=0.0):
        self.x_val, self.y_val, self.z_val = float(x_val), float(y_val), float(z_val)


class Quaternionr(_Msg):
    def __init__(self, x_val=0.0, y_val=0.0, z_val=0.0, w_val=1.0):
        self.w_val, self.x_val, self.y_val, self.z_val = float(w_val), float(x_val), float(y_val), float(z_val)


class Pose(_Msg):
    def __init__(self, position_val=None, orientation_val=None):
        self.position = position_val if position_val is not None else Vector3r()
        self.orientation = orientation_val if orientation_val is not None else Quaternionr()

    def to_msgpack(self, *args, **kwargs):
        return {"position": self.position.to_msgpack(), "orientation": self.orientation.to_msgpack()}


class _Future:
    def __init__(self, client: "MsgpackRpcClient", msgid: int):
        self._client, self._msgid = client, msgid

    def join(self):
        return self._client._wait(self._msgid)


class MsgpackRpcClient:
    """Blocking msgpack-RPC over one TCP socket; responses are matched to requests by msgid."""

    def __init__(self, host: str, port: int, connect_timeout: float, timeout: float):
        self.host, self.port, self.timeout = host, port, timeout
        self._sock = socket.create_connection((host, port), timeout=connect_timeout)   # before the import:
        try:                                                  # an unreachable server reads the same either way
            import msgpack
        except ImportError as e:
            self._sock.close()
            raise ImportError("the AirSim backend needs msgpack: pip install msgpack "
                              "(or pip install -e '.[airsim]')") from e
        self._sock.settimeout(timeout)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)   # small requests, one per step
        self._packer = msgpack.Packer(default=lambda o: o.to_msgpack())
        self._unpacker = msgpack.Unpacker(raw=False, unicode_errors="surrogateescape")
        self._next_id, self._done = 0, {}

    def call_async(self, method: str, *params) -> _Future:
        msgid, self._next_id = self._next_id, (self._next_id + 1) % 2**31
        self._sock.sendall(self._packer.pack([0, msgid, method, list(params)]))
        return _Future(self, msgid)

    def call(self, method: str, *params):
        return self.call_async(method, *params).join()

    def _wait(self, msgid: int):
        while msgid not in self._done:
            data = self._sock.recv(1 << 20)
            if not data:
                raise AirSimConnectionError(f"AirSim at {self.host}:{self.port} closed the connection")
            self._unpacker.feed(data)
            for msg in self._unpacker:
                if len(msg) == 4 and msg[0] == 1:
                    self._done[msg[1]] = (msg[2], msg[3])
        error, result = self._done.pop(msgid)
        if error is not None:
            raise AirSimRPCError(f"AirSim RPC error: {error}")
        return result

    def close(self):
        self._sock.close()


class MultirotorClient:
    """The subset of AirSim's ``MultirotorClient`` that the drone env uses: same names, argument
    order, defaults and RPC method names as PythonClient/airsim/client.py."""

    def __init__(self, ip: str = "", port: int = 41451, timeout_value: float = 3600, connect_timeout: float = 3.0):
        self.client = MsgpackRpcClient(ip or "127.0.0.1", port, connect_timeout, timeout_value)

    def ping(self):
        return self.client.call("ping")

    def confirmConnection(self):
        return self.ping()

    def reset(self):
        self.client.call("reset")

    def enableApiControl(self, is_enabled, vehicle_name=""):
        self.client.call("enableApiControl", bool(is_enabled), vehicle_name)

    def armDisarm(self, arm, vehicle_name=""):
        return self.client.call("armDisarm", bool(arm), vehicle_name)

    def takeoffAsync(self, timeout_sec=20, vehicle_name=""):
        return self.client.call_async("takeoff", timeout_sec, vehicle_name)

    def moveByVelocityAsync(self, vx, vy, vz, duration, drivetrain=DrivetrainType.MaxDegreeOfFreedom,
                            yaw_mode=None, vehicle_name=""):
        yaw_mode = YawMode() if yaw_mode is None else yaw_mode
        return self.client.call_async("moveByVelocity", float(vx), float(vy), float(vz), float(duration),
                                      int(drivetrain), yaw_mode, vehicle_name)

    def simGetImages(self, requests, vehicle_name=""):
        return [_Struct(r) for r in self.client.call("simGetImages", requests, vehicle_name)]

    def simGetCollisionInfo(self, vehicle_name=""):
        return _Struct(self.client.call("simGetCollisionInfo", vehicle_name))

    def getMultirotorState(self, vehicle_name=""):
        return _Struct(self.client.call("getMultirotorState", vehicle_name))

    def simSetVehiclePose(self, pose, ignore_collision, vehicle_name=""):
        self.client.call("simSetVehiclePose", pose, bool(ignore_collision), vehicle_name)


# ------------------------------------------------------------------------------------- backend
@dataclass
class AirSimConfig:
    host: str = "127.0.0.1"
    port: int = 41451
    vehicle_name: str = ""
    camera_name: str = "0"
    # goal(s) in the env frame (x north, y west, z up; metres from AirSim's origin, the PlayerStart);
    # [3] or [N, 3]: with N goals one is drawn per reset from the env's seeded RNG
    goal: tuple = (20.0, 0.0, 3.0)
    start: tuple | None = None        # optional start [x, y, z, yaw] (env frame) set after takeoff
    client: str = "auto"              # "auto" | "cosysairsim" | "airsim" | "builtin"
    connect_timeout_s: float = 3.0    # an unreachable server fails within this (< 5 s)
    rpc_timeout_s: float = 60.0
    takeoff: bool = True
    takeoff_timeout_s: float = 20.0
    image_type: str = "DepthPerspective"   # or "DepthPlanar" (z-depth, like the pybullet backend)
    ground_z: float = 0.0             # ground height in the env frame (altitude = z - ground_z)
    join: bool = True                 # wait for each moveByVelocity to finish (one control period)


def _import_client(kind: str):
    """(module with ImageRequest/ImageType/YawMode/Pose/..., MultirotorClient class) for ``kind``."""
    import importlib
    import sys

    if kind not in ("auto", "cosysairsim", "airsim", "builtin"):
        raise ValueError(f"AirSim client must be auto, cosysairsim, airsim or builtin, got {kind!r}")
    for name in ("cosysairsim", "airsim", "builtin") if kind == "auto" else (kind,):
        if name == "builtin":
            return sys.modules[__name__], MultirotorClient
        try:
            mod = importlib.import_module(name)
            return mod, mod.MultirotorClient
        except Exception:   # airsim 1.8.1 on py3.11 fails at import inside tornado 4, not with ImportError
            if kind != "auto":
                raise


class AirSimDrone:
    """Backend for DroneEnv(backend="airsim"): same reset/step/get_state/get_depth/collided as
    PyBulletDrone. The flight controller inside AirSim provides the velocity response."""

    def __init__(self, config, image_hw: tuple[int, int], max_depth: float, dt: float):
        cfg = config if isinstance(config, AirSimConfig) else AirSimConfig(**(config or {}))
        self.cfg, (self.h, self.w), self.max_depth, self.dt = cfg, image_hw, max_depth, dt
        self.ground_z, self.prims = cfg.ground_z, Primitives.empty()   # the scene lives in Unreal
        where = f"{cfg.host}:{cfg.port}"
        hint = (f"start AirSim/Cosys-AirSim (the Unreal binary with settings.json \"SimMode\": \"Multirotor\") "
                f"so it listens on {where}, or use backend='pybullet'")
        try:   # probe with the built-in client: a fast, uniform failure whichever client is used next
            probe = MultirotorClient(cfg.host, cfg.port, cfg.connect_timeout_s, cfg.connect_timeout_s)
            probe.ping()
            probe.client.close()
        except OSError as e:   # refused, unreachable, or connected but no answer within the timeout
            raise AirSimConnectionError(f"cannot reach AirSim at {where} ({e or type(e).__name__}); {hint}") from None
        self.api, cls = _import_client(cfg.client)
        self.client = (cls(cfg.host, cfg.port, cfg.rpc_timeout_s, cfg.connect_timeout_s) if cls is MultirotorClient
                       else cls(cfg.host, cfg.port, timeout_value=cfg.rpc_timeout_s))
        self._image_type = getattr(self.api.ImageType, cfg.image_type)
        goals = np.asarray(cfg.goal, dtype=np.float64)
        self._goals = goals.reshape(-1, 3)

    def reset(self, rng: np.random.Generator) -> None:
        c, name = self.client, self.cfg.vehicle_name
        c.reset()
        c.enableApiControl(True, name)   # reset drops API control and arming
        c.armDisarm(True, name)
        if self.cfg.takeoff:
            c.takeoffAsync(self.cfg.takeoff_timeout_s, name).join()
        if self.cfg.start is not None:
            x, y, z, yaw = self.cfg.start
            q = quat_ned_flip(np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2))
            pose = self.api.Pose(self.api.Vector3r(*ned_flip((x, y, z))),
                                 self.api.Quaternionr(q[1], q[2], q[3], q[0]))
            c.simSetVehiclePose(pose, True, name)
        self.goal = self._goals[rng.integers(len(self._goals))] if len(self._goals) > 1 else self._goals[0]
        # a drone resting on the ground before takeoff reports has_collided: only later stamps count
        self._stamp = c.simGetCollisionInfo(name).time_stamp
        self._last = self.get_state()

    def step(self, cmd: np.ndarray) -> None:
        """cmd [3]: forward speed (m/s), yaw rate (rad/s), vertical speed (m/s), env frame."""
        yaw = self._last.yaw
        v_ned = ned_flip((cmd[0] * np.cos(yaw), cmd[0] * np.sin(yaw), cmd[2]))   # world velocity
        rate_ned_deg = -np.degrees(cmd[1])                                       # z flips: rate flips
        fut = self.client.moveByVelocityAsync(float(v_ned[0]), float(v_ned[1]), float(v_ned[2]), self.dt,
                                              self.api.DrivetrainType.MaxDegreeOfFreedom,
                                              self.api.YawMode(True, float(rate_ned_deg)), self.cfg.vehicle_name)
        if self.cfg.join:
            fut.join()
        self._last = self.get_state()

    def get_state(self) -> Kinematics:
        k = self.client.getMultirotorState(self.cfg.vehicle_name).kinematics_estimated
        p, v, o, w = k.position, k.linear_velocity, k.orientation, k.angular_velocity
        q = quat_ned_flip(o.w_val, o.x_val, o.y_val, o.z_val)
        return Kinematics(ned_flip((p.x_val, p.y_val, p.z_val)), ned_flip((v.x_val, v.y_val, v.z_val)),
                          _yaw(q), float(ned_flip((w.x_val, w.y_val, w.z_val))[2]))

    def get_depth(self) -> np.ndarray:
        """[H, W] depth in metres; the server's image is resampled (nearest) when its size differs."""
        req = self.api.ImageRequest(self.cfg.camera_name, self._image_type, True, False)
        r = self.client.simGetImages([req], self.cfg.vehicle_name)[0]
        if not r.width or not r.height:   # AirSim sends an empty image when the camera is not ready
            return np.full((self.h, self.w), self.max_depth, np.float32)
        img = np.asarray(r.image_data_float, dtype=np.float32).reshape(r.height, r.width)
        rows = (np.arange(self.h) * r.height // self.h)[:, None]
        cols = (np.arange(self.w) * r.width // self.w)[None, :]
        return np.clip(np.nan_to_num(img[rows, cols], nan=self.max_depth, posinf=self.max_depth),
                       0.0, self.max_depth)

    def collided(self) -> bool:
        info = self.client.simGetCollisionInfo(self.cfg.vehicle_name)
        return bool(info.has_collided) and info.time_stamp > self._stamp

    def close(self) -> None:
        inner = getattr(self.client, "client", None)
        if hasattr(inner, "close"):
            inner.close()
