// A small table of the console's strings in English and Chinese. The
// language is the browser's until the user picks one (kept in
// localStorage: a preference, not a secret).

export type Lang = 'en' | 'zh';

const table = {
  'app.title': { en: 'CCI console', zh: 'CCI 控制台' },
  'nav.overview': { en: 'Overview', zh: '概览' },
  'nav.workloads': { en: 'Workloads', zh: '工作负载' },
  'nav.usage': { en: 'Usage', zh: '用量' },
  'nav.tenants': { en: 'Tenants', zh: '租户' },
  'nav.hosts': { en: 'Hosts', zh: '主机' },
  'nav.pools': { en: 'Pools', zh: '资源池' },
  'nav.registry': { en: 'Registry', zh: '镜像仓库' },
  'pools.requested': { en: 'Requested / allocatable', zh: '已请求 / 可分配' },
  'registry.repository': { en: 'Repository', zh: '仓库' },
  'registry.tags': { en: 'Tags', zh: '标签' },
  'registry.pull': { en: 'Image', zh: '镜像' },
  'nav.logout': { en: 'Log out', zh: '退出' },
  'nav.namespace': { en: 'Namespace', zh: '命名空间' },
  'login.title': { en: 'Log in to CCI', zh: '登录 CCI' },
  'login.token': { en: 'Token', zh: '令牌' },
  'login.kubeconfig': { en: 'or a kubeconfig file', zh: '或 kubeconfig 文件' },
  'login.submit': { en: 'Log in', zh: '登录' },
  'login.hint': {
    en: 'Paste the token that `cci tenant create` gave you, or upload its kubeconfig (operators: the admin kubeconfig).',
    zh: '粘贴 `cci tenant create` 生成的令牌，或上传其 kubeconfig（运维人员：管理员 kubeconfig）。',
  },
  'login.expired': { en: 'Your session ended; log in again.', zh: '会话已结束，请重新登录。' },
  'overview.running': { en: 'Pods running', zh: '运行中的 Pod' },
  'overview.pending': { en: 'Pending pods', zh: '等待中的 Pod' },
  'overview.quota': { en: 'Quota (used / hard)', zh: '配额（已用 / 上限）' },
  'overview.cost': { en: 'Cost this month', zh: '本月费用' },
  'overview.gpu': { en: 'GPUs in use / quota', zh: 'GPU 使用 / 配额' },
  'overview.byDay': { en: 'Cost this month by day', zh: '本月每日费用' },
  'overview.costPerPod': { en: 'Cost this month per pod', zh: '本月每个 Pod 的费用' },
  'overview.none': { en: 'none', zh: '无' },
  'workloads.create': { en: 'Create', zh: '创建' },
  'workloads.deployments': { en: 'Deployments', zh: '无状态负载' },
  'workloads.pods': { en: 'Pods', zh: 'Pod' },
  'workloads.services': { en: 'Services', zh: '服务' },
  'workloads.jobs': { en: 'Jobs', zh: '任务' },
  'workloads.statefulsets': { en: 'StatefulSets', zh: '有状态负载' },
  'workloads.cronjobs': { en: 'CronJobs', zh: '定时任务' },
  'workloads.configmaps': { en: 'ConfigMaps', zh: '配置项' },
  'workloads.secrets': { en: 'Secrets', zh: '密钥' },
  'workloads.pvcs': { en: 'Volumes (PVC)', zh: '存储卷（PVC）' },
  'workloads.data': { en: 'Data', zh: '数据' },
  'workloads.suspend': { en: 'Suspend', zh: '暂停' },
  'workloads.resume': { en: 'Resume', zh: '恢复' },
  'secret.reveal': { en: 'Reveal values', zh: '显示值' },
  'secret.hide': { en: 'Hide values', zh: '隐藏值' },
  'yaml.title': { en: 'Create from YAML', zh: '从 YAML 创建' },
  'yaml.created': { en: 'Created', zh: '已创建' },
  'rollout.status': { en: 'Rollout', zh: '发布状态' },
  'rollout.history': { en: 'History (ReplicaSets by revision)', zh: '历史（按版本的 ReplicaSet）' },
  'rollout.restart': { en: 'Restart', zh: '重启' },
  'rollout.rollback': { en: 'Roll back to this', zh: '回滚到此版本' },
  'secret.hidden': { en: 'Keys and values are not read until revealed.', zh: '显示前不读取键和值。' },
  'workloads.scale': { en: 'Scale', zh: '伸缩' },
  'workloads.delete': { en: 'Delete', zh: '删除' },
  'workloads.empty': { en: 'Nothing here yet.', zh: '暂无内容。' },
  'form.name': { en: 'Name', zh: '名称' },
  'form.image': { en: 'Image', zh: '镜像' },
  'form.flavor': { en: 'Flavor', zh: '规格' },
  'form.perHour': { en: 'per hour', zh: '每小时' },
  'form.replicas': { en: 'Replicas', zh: '副本数' },
  'form.port': { en: 'Port (optional: makes a Service)', zh: '端口（可选：同时创建服务）' },
  'form.env': { en: 'Environment (KEY=VALUE per line)', zh: '环境变量（每行 KEY=VALUE）' },
  'form.command': { en: 'Command (optional, run by sh -c)', zh: '命令（可选，由 sh -c 执行）' },
  'form.yaml': { en: 'Equivalent YAML', zh: '等价的 YAML' },
  'form.submit': { en: 'Create', zh: '创建' },
  'form.cancel': { en: 'Cancel', zh: '取消' },
  'pod.status': { en: 'Status', zh: '状态' },
  'pod.conditions': { en: 'Conditions', zh: '条件' },
  'pod.events': { en: 'Events', zh: '事件' },
  'pod.logs': { en: 'Logs', zh: '日志' },
  'pod.follow': { en: 'Follow', zh: '跟随' },
  'pod.pause': { en: 'Pause', zh: '暂停' },
  'pod.timeline': { en: 'Timeline', zh: '时间线' },
  'pod.cores': { en: 'cores', zh: '核' },
  'pod.memory': { en: 'Memory', zh: '内存' },
  'pod.used': { en: 'used', zh: '已用' },
  'pod.request': { en: 'request', zh: '请求' },
  'pod.limit': { en: 'limit', zh: '上限' },
  'pod.noSamples': { en: 'No sample yet (the metrics API samples every 15 s).', zh: '暂无样本（指标 API 每 15 秒采样一次）。' },
  'pod.lines': { en: 'lines', zh: '行' },
  'pod.new': { en: 'new', zh: '新' },
  'pod.previous': { en: 'previous container', zh: '上一个容器' },
  'pod.download': { en: 'Download', zh: '下载' },
  'pod.noShell': { en: 'This container has no shell (tried bash and sh); logs and the rest of the page still work.', zh: '此容器没有 shell（已尝试 bash 和 sh）；日志和页面其他部分仍可使用。' },
  'pod.terminal': { en: 'Terminal', zh: '终端' },
  'pod.connect': { en: 'Connect', zh: '连接' },
  'pod.disconnect': { en: 'Disconnect', zh: '断开' },
  'usage.title': { en: 'Usage this month', zh: '本月用量' },
  'usage.csv': { en: 'Download CSV', zh: '下载 CSV' },
  'usage.pod': { en: 'Pod', zh: 'Pod' },
  'usage.cost': { en: 'Cost', zh: '费用' },
  'usage.byNamespace': { en: 'By namespace', zh: '按命名空间' },
  'usage.byPod': { en: 'By pod', zh: '按 Pod' },
  'usage.byDay': { en: 'By day', zh: '按天' },
  'usage.date': { en: 'Day (UTC)', zh: '日期（UTC）' },
  'tenants.cost': { en: 'Cost this month', zh: '本月费用' },
  'tenants.create': { en: 'Create tenant', zh: '创建租户' },
  'hosts.pool': { en: 'Pool', zh: '资源池' },
  'hosts.pods': { en: 'Pods', zh: 'Pod 数' },
  'live.on': { en: 'live', zh: '实时' },
  'live.connecting': { en: 'connecting', zh: '连接中' },
  'live.retry': { en: 'reconnecting in', zh: '重新连接于' },
  'session.retry': { en: 'asking again in', zh: '重试于' },
  'common.loading': { en: 'Loading…', zh: '加载中…' },
  'common.error': { en: 'Error', zh: '错误' },
  'common.language': { en: '中文', zh: 'English' },
} as const;

export type Key = keyof typeof table;

export function translate(lang: Lang, key: Key): string {
  const row = table[key];
  return row ? row[lang] : key;
}

export function defaultLang(navigatorLang: string | undefined, saved: string | null): Lang {
  if (saved === 'en' || saved === 'zh') return saved;
  return navigatorLang?.toLowerCase().startsWith('zh') ? 'zh' : 'en';
}

// Every key has both languages: checked by the unit test.
export function missing(): string[] {
  const out: string[] = [];
  for (const [k, v] of Object.entries(table)) {
    if (!v.en || !v.zh) out.push(k);
  }
  return out;
}
