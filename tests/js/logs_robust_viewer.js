// The log streaming API document's RobustLogViewer class, verbatim, run under Node with the
// browser WebSocket API (Node's own where it has one, else the `ws` package's, which
// implements the same interface) and a minimal DOM standing in for the page.
if (typeof globalThis.WebSocket === 'undefined') {
  globalThis.WebSocket = require('ws');
}

// It prints what the page would show: "LOG <line>" and "STATUS <class> <text>".
// The test points its URL at the test server.

class Element {
  constructor(id) {
    this.id = id;
    this.children = [];
    this._text = '';
    this._class = '';
    this.scrollTop = 0;
    this.scrollHeight = 0;
  }
  get firstChild() { return this.children[0]; }
  appendChild(child) {
    this.children.push(child);
    if (this.id === 'log-container') console.log(`LOG ${child.textContent}`);
    return child;
  }
  removeChild(child) { this.children.splice(this.children.indexOf(child), 1); }
  get textContent() { return this._text; }
  set textContent(value) { this._text = value; }
  get className() { return this._class; }
  set className(value) {
    this._class = value;
    if (this.id === 'status-bar' && value) console.log(`STATUS ${value} ${this._text}`);
  }
}

const elements = { 'log-container': new Element('log-container'), 'status-bar': new Element('status-bar') };
globalThis.document = {
  getElementById: (id) => elements[id],
  createElement: () => new Element(null),
};

class RobustLogViewer {
  constructor(logFile, containerId) {
    this.logFile = logFile;
    this.container = document.getElementById(containerId);
    this.ws = null;
    this.reconnectAttempts = 0;
    this.maxReconnectAttempts = 5;
  }

  connect() {
    try {
      this.ws = new WebSocket(
        `ws://localhost:19159/api/v1/ws/logs?file=${this.logFile}`
      );
      
      this.ws.onopen = () => {
        this.reconnectAttempts = 0;
        this.showStatus('已连接', 'success');
      };
      
      this.ws.onmessage = (event) => {
        const message = event.data;
        
        // 检查是否是错误消息
        if (message.includes('不允许访问') || 
            message.includes('不存在') ||
            message.includes('错误')) {
          this.showStatus(message, 'error');
          return;
        }
        
        // 检查是否是系统通知
        if (message.includes('被截断') || 
            message.includes('重新加载')) {
          this.showStatus(message, 'warning');
          return;
        }
        
        // 正常日志
        this.displayLog(message);
      };
      
      this.ws.onclose = (event) => {
        if (event.wasClean) {
          this.showStatus('连接已关闭', 'info');
        } else {
          this.showStatus('连接意外断开', 'error');
          this.attemptReconnect();
        }
      };
      
      this.ws.onerror = (error) => {
        console.error('WebSocket 错误:', error);
        this.showStatus('连接错误', 'error');
      };
      
    } catch (error) {
      console.error('创建 WebSocket 失败:', error);
      this.showStatus('无法创建连接', 'error');
    }
  }

  attemptReconnect() {
    if (this.reconnectAttempts >= this.maxReconnectAttempts) {
      this.showStatus('重连失败，请刷新页面', 'error');
      return;
    }
    
    this.reconnectAttempts++;
    const delay = Math.min(1000 * Math.pow(2, this.reconnectAttempts), 30000);
    
    this.showStatus(
      `${delay / 1000} 秒后重连 (${this.reconnectAttempts}/${this.maxReconnectAttempts})`,
      'warning'
    );
    
    setTimeout(() => this.connect(), delay);
  }

  displayLog(message) {
    const line = document.createElement('div');
    line.className = 'log-line';
    line.textContent = message;
    this.container.appendChild(line);
    
    // 限制显示行数
    while (this.container.children.length > 1000) {
      this.container.removeChild(this.container.firstChild);
    }
    
    this.container.scrollTop = this.container.scrollHeight;
  }

  showStatus(message, type) {
    const statusBar = document.getElementById('status-bar');
    statusBar.textContent = message;
    statusBar.className = `status-${type}`;
    
    // 3 秒后清除非错误状态
    if (type !== 'error') {
      setTimeout(() => {
        statusBar.textContent = '';
        statusBar.className = '';
      }, 3000);
    }
  }

  disconnect() {
    if (this.ws) {
      this.ws.close();
      this.ws = null;
    }
  }
}

// 使用示例 (the file name comes from the command line)
const viewer = new RobustLogViewer(process.argv[2] || 'ds_update.log', 'log-container');
viewer.connect();
