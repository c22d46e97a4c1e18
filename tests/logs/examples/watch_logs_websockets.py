# ruff: noqa
# The log streaming API document's example, verbatim; the test points its URL at the test server.
import asyncio
import websockets


async def watch_logs(log_file="ds_update.log"):
    uri = f"ws://localhost:19159/api/v1/ws/logs?file={log_file}"

    async with websockets.connect(uri) as websocket:
        print(f"已连接到 {log_file}")

        try:
            async for message in websocket:
                print(f"[日志] {message}")
        except websockets.exceptions.ConnectionClosed:
            print("连接已关闭")


# 运行
asyncio.run(watch_logs("ds_update.log"))
