# ruff: noqa
# The log streaming API document's example, verbatim; the test points its URL at the test server.
import websocket


def on_message(ws, message):
    print(f"[日志] {message}")


def on_error(ws, error):
    print(f"[错误] {error}")


def on_close(ws, close_status_code, close_msg):
    print("连接已关闭")


def on_open(ws):
    print("连接已建立")


# 创建 WebSocket 连接
ws = websocket.WebSocketApp(
    "ws://localhost:19159/api/v1/ws/logs?file=download.log",
    on_open=on_open,
    on_message=on_message,
    on_error=on_error,
    on_close=on_close,
)

# 运行（阻塞）
ws.run_forever()
