class VoidVMWebSocket {
  constructor(url, token) {
    this.url = url
    this.token = token
    this.ws = null
    this.messageId = 0
    this.callbacks = new Map()
    this.eventHandlers = new Map()
  }

  connect() {
    return new Promise((resolve, reject) => {
      this.ws = new WebSocket(`${this.url}?token=${this.token}`)

      this.ws.onopen = () => {
        console.log('WebSocket connected')
        resolve()
      }

      this.ws.onmessage = event => {
        const message = JSON.parse(event.data)
        this.handleMessage(message)
      }

      this.ws.onerror = error => {
        console.error('WebSocket error:', error)
        reject(error)
      }

      this.ws.onclose = () => {
        console.log('WebSocket disconnected')
        this.reconnect()
      }
    })
  }

  send(type, data) {
    return new Promise((resolve, reject) => {
      const id = `msg-${++this.messageId}`
      const message = { type, data, id }

      this.callbacks.set(id, { resolve, reject })
      this.ws.send(JSON.stringify(message))

      // 超时处理
      setTimeout(() => {
        if (this.callbacks.has(id)) {
          this.callbacks.delete(id)
          reject(new Error('Request timeout'))
        }
      }, 30000)
    })
  }

  subscribe(topic, handler) {
    this.eventHandlers.set(topic, handler)
    return this.send('subscribe', { topic })
  }

  handleMessage(message) {
    const { type, data, id } = message

    // 处理响应
    if (id && this.callbacks.has(id)) {
      const { resolve } = this.callbacks.get(id)
      this.callbacks.delete(id)
      resolve(data)
      return
    }

    // 处理事件
    if (this.eventHandlers.has(type)) {
      this.eventHandlers.get(type)(data)
    }
  }

  // 虚拟机控制方法
  async startVm(vmId) {
    return this.send('vm-control', { vmId, action: 'start' })
  }

  async stopVm(vmId) {
    return this.send('vm-control', { vmId, action: 'stop' })
  }

  // 订阅虚拟机状态
  subscribeVmStatus(vmId, handler) {
    return this.subscribe('vm-status', handler)
  }

  // VNC 连接
  async connectVnc(vmId) {
    return this.send('vnc-connect', { vmId })
  }

  sendVncInput(vmId, inputType, inputData) {
    this.send('vnc-input', { vmId, inputType, ...inputData })
  }

  // 终端连接
  async connectTerminal(vmId, credentials) {
    return this.send('terminal-connect', { vmId, type: 'ssh', credentials })
  }

  sendTerminalInput(vmId, input) {
    this.send('terminal-input', { vmId, input })
  }

  reconnect() {
    setTimeout(() => {
      console.log('Attempting to reconnect...')
      this.connect()
    }, 5000)
  }

  disconnect() {
    if (this.ws) {
      this.ws.close()
    }
  }
}
