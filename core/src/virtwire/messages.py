"""The message catalogue: every human-readable text a client sees, per locale.

The default locale ``zh-CN`` uses the wording of the API documents virtwire implements
(existing clients match some of these texts); ``en`` is available. Plugins add their own
texts through the ``register_texts`` hook. A ``VirtwireError`` whose code has an
``error.<CODE>`` entry reaches the client with that text (docs/reference.md lists the keys).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .errors import VirtwireError

__all__ = ["DEFAULT_LOCALE", "LOCALES", "Catalogue"]

DEFAULT_LOCALE = "zh-CN"

_BUILTIN: dict[str, dict[str, str]] = {
    "zh-CN": {
        "auth.required": "需要认证：请在 auth 消息或 token 查询参数中提供 token",
        "auth.timeout": "认证超时：{seconds} 秒内未收到 auth 消息",
        "auth.failed": "认证失败：{reason}",
        "auth.expired": "token 已过期",
        "auth.user_changed": "不能在同一连接上切换用户（{old} → {new}）",
        "forbidden.scope": "权限不足：需要 {scope} 权限",
        "forbidden.vm": "无权访问虚拟机 {vm_id}",
        "message.too_big": "消息过大：{size} 字节，上限 {limit} 字节",
        "message.unknown_type": "未知的消息类型：{type}",
        "message.unknown_topic": "未知的订阅主题：{topic}（可用：{available}）",
        "message.not_subscribed": "未订阅：{topic}",
        "message.rate_limited": "消息过于频繁，请稍后再试",
        "message.flood": "消息持续过于频繁，连接已关闭",
        "message.invalid_field": "消息格式错误：字段 {field} 无效（{reason}）",
        "message.invalid_json": "消息不是有效的 JSON（{reason}）",
        "message.not_utf8": "二进制消息必须是 UTF-8 编码的 JSON",
        "auth.required_query": "需要认证：请在 token 查询参数或 Authorization 头中提供 token",
        "auth.ambiguous": "认证失败：请求中有多个 token",
        "message.busy": "并发请求过多（上限 {limit}）",
        "message.too_many_subscriptions": "订阅过多（每个连接上限 {limit}）",
        "internal": "服务器内部错误",
        "vm.not_found": "虚拟机 {vm_id} 不存在",
        "vm.action_failed.start": "虚拟机启动失败",
        "vm.action_failed.stop": "虚拟机停止失败",
        "vm.action_failed.restart": "虚拟机重启失败",
        "vm.action_failed.pause": "虚拟机暂停失败",
        "vm.action_failed.resume": "虚拟机恢复失败",
        "vm.action_failed.reset": "虚拟机重置失败",
        "vm.event.vm-created": "虚拟机创建成功",
        "vm.event.vm-started": "虚拟机已启动",
        "vm.event.vm-stopped": "虚拟机已停止",
        "vm.event.vm-paused": "虚拟机已暂停",
        "vm.event.vm-resumed": "虚拟机已恢复",
        "vm.event.vm-rebooted": "虚拟机已重启",
        "vm.event.vm-crashed": "虚拟机崩溃",
        "vm.event.vm-deleted": "虚拟机已删除",
        "backend.unavailable": "虚拟化后端不可用：{name}",
        "vm.event.backend-unavailable": "虚拟化后端 {name} 无法连接，虚拟机状态暂不可知",
        "vm.event.backend-available": "虚拟化后端 {name} 已恢复连接",
        "close.slow_consumer": "客户端接收过慢，连接已关闭",
        "close.shutdown": "服务器正在关闭",
        "console.too_many_connection": "控制台过多（每个连接上限 {limit} 个）",
        "console.too_many_user": "控制台过多（每个用户上限 {limit} 个）",
        "logs.not_found": "日志文件 {name} 不存在",
        "logs.forbidden": "不允许访问请求的文件: {name}",
        "logs.truncated": "日志文件被截断，重新加载...",
        "logs.deleted": "日志文件 {name} 不再存在",
        "logs.rotated": "日志文件 {name} 已轮转，继续跟踪新文件",
        "logs.rotated_skipped": (
            "日志文件 {name} 已轮转，继续跟踪新文件（新文件开头 {count} 行未显示）"
        ),
        "logs.dropped": "客户端接收过慢，跳过了 {count} 行日志",
        "logs.too_many": "连接过多：每个客户端最多 {limit} 个日志连接",
        "logs.line_cut": "…[行过长，已截断 {count} 字节]",
        "terminal.no_transport": "虚拟机 {vm_id} 没有可用的 {type} 终端",
        "terminal.not_found": "终端会话 {session} 不存在",
        "terminal.closed": "终端会话 {session} 已结束（{reason}）",
        "terminal.ambiguous": "此连接上虚拟机 {vm_id} 有多个终端，请指定 sessionId",
        "terminal.not_attached": "此连接未连接虚拟机 {vm_id} 的终端",
        "terminal.read_only": "只读观察者不能向终端输入",
        "terminal.not_owner": "只有终端的所有者可以执行此操作",
        "terminal.busy_owner": "终端会话 {session} 属于其他用户",
        "terminal.too_many": "终端会话过多（每个用户上限 {limit}）",
        "error.VM_NOT_FOUND": "虚拟机 {vm_id} 不存在",
        "error.VM_START_FAILED": "虚拟机启动失败",
        "error.VM_STOP_FAILED": "虚拟机停止失败",
        "error.VM_RESTART_FAILED": "虚拟机重启失败",
        "error.VM_PAUSE_FAILED": "虚拟机暂停失败",
        "error.VM_RESUME_FAILED": "虚拟机恢复失败",
        "error.VM_RESET_FAILED": "虚拟机重置失败",
    },
    "en": {
        "auth.required": "authentication required: send an auth message or a token query parameter",
        "auth.timeout": "authentication timed out: no auth message within {seconds} s",
        "auth.failed": "authentication failed: {reason}",
        "auth.expired": "token expired",
        "auth.user_changed": "cannot switch users on one connection ({old} -> {new})",
        "forbidden.scope": "forbidden: the {scope} scope is required",
        "forbidden.vm": "forbidden: no access to VM {vm_id}",
        "message.too_big": "message too big: {size} bytes, limit {limit} bytes",
        "message.unknown_type": "unknown message type: {type}",
        "message.unknown_topic": "unknown topic: {topic} (available: {available})",
        "message.not_subscribed": "not subscribed: {topic}",
        "message.rate_limited": "too many messages, slow down",
        "message.flood": "too many messages for too long, connection closed",
        "message.invalid_field": "invalid message: field {field} is invalid ({reason})",
        "message.invalid_json": "the message is not valid JSON ({reason})",
        "message.not_utf8": "binary messages must carry UTF-8 JSON",
        "auth.required_query": (
            "authentication required: give the token in the token query parameter "
            "or an Authorization header"
        ),
        "auth.ambiguous": "authentication failed: more than one token in the request",
        "message.busy": "too many concurrent requests (limit {limit})",
        "message.too_many_subscriptions": "too many subscriptions (limit {limit} per connection)",
        "internal": "internal server error",
        "vm.not_found": "VM {vm_id} not found",
        "vm.action_failed.start": "failed to start the VM",
        "vm.action_failed.stop": "failed to stop the VM",
        "vm.action_failed.restart": "failed to restart the VM",
        "vm.action_failed.pause": "failed to pause the VM",
        "vm.action_failed.resume": "failed to resume the VM",
        "vm.action_failed.reset": "failed to reset the VM",
        "vm.event.vm-created": "VM created",
        "vm.event.vm-started": "VM started",
        "vm.event.vm-stopped": "VM stopped",
        "vm.event.vm-paused": "VM paused",
        "vm.event.vm-resumed": "VM resumed",
        "vm.event.vm-rebooted": "VM rebooted",
        "vm.event.vm-crashed": "VM crashed",
        "vm.event.vm-deleted": "VM deleted",
        "backend.unavailable": "hypervisor backend unavailable: {name}",
        "vm.event.backend-unavailable": "hypervisor backend {name} is unreachable; "
        "VM status is unknown until it is back",
        "vm.event.backend-available": "hypervisor backend {name} is reachable again",
        "close.slow_consumer": "client too slow, connection closed",
        "close.shutdown": "server shutting down",
        "console.too_many_connection": "too many consoles (limit {limit} per connection)",
        "console.too_many_user": "too many consoles (limit {limit} per user)",
        "logs.not_found": "log file {name} does not exist",
        "logs.forbidden": "access to the requested file is not allowed: {name}",
        "logs.truncated": "log file truncated, reloading...",
        "logs.deleted": "log file {name} no longer exists",
        "logs.rotated": "log file {name} was rotated, following the new file",
        "logs.rotated_skipped": "log file {name} was rotated, following the new file "
        "({count} lines at its start are not shown)",
        "logs.dropped": "client too slow, skipped {count} log lines",
        "logs.too_many": "too many connections: at most {limit} log connections per client",
        "logs.line_cut": "…[line too long, {count} bytes cut]",
        "terminal.no_transport": "no {type} terminal is available for VM {vm_id}",
        "terminal.not_found": "terminal session {session} does not exist",
        "terminal.closed": "terminal session {session} has ended ({reason})",
        "terminal.ambiguous": "this connection holds several terminals of VM {vm_id}: "
        "give sessionId",
        "terminal.not_attached": "this connection holds no terminal of VM {vm_id}",
        "terminal.read_only": "observers cannot type into the terminal",
        "terminal.not_owner": "only the terminal's owner can do this",
        "terminal.busy_owner": "terminal session {session} belongs to another user",
        "terminal.too_many": "too many terminal sessions (limit {limit} per user)",
        "error.VM_NOT_FOUND": "VM {vm_id} not found",
        "error.VM_START_FAILED": "failed to start the VM",
        "error.VM_STOP_FAILED": "failed to stop the VM",
        "error.VM_RESTART_FAILED": "failed to restart the VM",
        "error.VM_PAUSE_FAILED": "failed to pause the VM",
        "error.VM_RESUME_FAILED": "failed to resume the VM",
        "error.VM_RESET_FAILED": "failed to reset the VM",
    },
}

LOCALES = tuple(_BUILTIN)


class Catalogue:
    """Looks up message templates for one locale, falling back to ``en`` then the key."""

    def __init__(self, locale: str = DEFAULT_LOCALE) -> None:
        if locale not in _BUILTIN:
            raise ValueError(f"unknown locale {locale!r} (available: {', '.join(LOCALES)})")
        self.locale = locale
        self._texts: dict[str, dict[str, str]] = {k: dict(v) for k, v in _BUILTIN.items()}

    def add(self, locale: str, texts: Mapping[str, str]) -> None:
        """Add or override templates for a locale (what ``register_texts`` does)."""
        for key, template in texts.items():
            if not isinstance(key, str) or not isinstance(template, str):
                raise TypeError(f"catalogue texts must map str to str, got {key!r}: {template!r}")
        self._texts.setdefault(locale, {}).update(texts)

    def __call__(self, key: str, /, **params: object) -> str:
        """The text of ``key`` in this locale (else ``en``, else the key itself), formatted
        with ``params`` (``str.format`` fields)."""
        template = self.template(key)
        if template is None:
            return key
        return template.format(**params) if params else template

    def template(self, key: str) -> str | None:
        """The unformatted template of ``key`` (this locale, else ``en``), or None."""
        template = self._texts.get(self.locale, {}).get(key)
        if template is None:
            template = self._texts["en"].get(key)
        return template

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.template(key) is not None

    def keys(self) -> Iterator[str]:
        """Every key with a text in this locale or in ``en``."""
        return iter(sorted(set(self._texts.get(self.locale, {})) | set(self._texts["en"])))

    def error_data(self, error: VirtwireError) -> dict[str, Any]:
        """The ``data`` of the ``error`` frame for ``error``: its ``message`` is the
        catalogue text ``error.text_key`` (if set) or ``error.<CODE>``, formatted with
        ``vm_id`` and ``error.params``, when the catalogue has one (and all its fields are
        given), else the message raised."""
        data = error.to_data()
        key = getattr(error, "text_key", None) or f"error.{error.code}"
        template = self.template(key)
        if template is not None:
            try:
                data["message"] = template.format(vm_id=error.vm_id, **error.params)
            except (KeyError, IndexError, ValueError):
                pass
        return data
