// The log streaming API document's Node.js example, verbatim; the test points its URL at the test server.
const WebSocket = require('ws');

// 连接到上传日志
const ws = new WebSocket('ws://localhost:19159/api/v1/ws/logs?file=upload.log');

ws.on('open', () => {
  console.log('WebSocket 连接已建立');
});

ws.on('message', (data) => {
  console.log('[日志]', data.toString());
});

ws.on('close', () => {
  console.log('WebSocket 连接已关闭');
});

ws.on('error', (error) => {
  console.error('WebSocket 错误:', error);
});

// 发送心跳
const heartbeat = setInterval(() => {
  if (ws.readyState === WebSocket.OPEN) {
    ws.ping();
  }
}, 30000);

// 优雅关闭
process.on('SIGINT', () => {
  clearInterval(heartbeat);
  ws.close();
  process.exit(0);
});
