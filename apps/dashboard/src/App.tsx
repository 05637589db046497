import { QueryClient, QueryClientProvider } from '@tanstack/react-query';
import { useCallback, useEffect, useMemo, useRef } from 'react';
import { Layout } from './components/Layout';
import { RealtimeContext } from './components/RealtimeContext';
import { ApiError } from './lib/api';
import { authStore, LOGOUT_REASONS, useSession, type Session } from './lib/auth';
import { browserNotifications, handleTaskAssigned, ToastStore } from './lib/notifications';
import { Link, Redirect, usePathname } from './lib/router';
import { AccountPage } from './pages/AccountPage';
import { ApprovalsPage } from './pages/ApprovalsPage';
import { ConversationPage } from './pages/ConversationPage';
import { ConversationsPage } from './pages/ConversationsPage';
import { LoginPage } from './pages/LoginPage';
import { OverviewPage } from './pages/OverviewPage';
import { TasksPage } from './pages/TasksPage';
import { UsersPage } from './pages/UsersPage';
import { PresenceStore, TypingStore } from './realtime/LiveState';
import { StatsHistory } from './realtime/StatsHistory';
import { conversationIdFromPath, topicsForPath } from './realtime/topics';
import type { ServerMessage } from './realtime/messages';
import { useWebSocket } from './realtime/useWebSocket';

export function createQueryClient(): QueryClient {
  return new QueryClient({
    defaultOptions: {
      queries: {
        refetchOnWindowFocus: false,
        retry: (count, err) => {
          if (err instanceof ApiError && err.status >= 400 && err.status < 500) return false;
          return count < 2;
        },
      },
    },
  });
}

function AuthedApp({ session, history }: { session: Session; history: StatsHistory }) {
  const path = usePathname();
  const presence = useMemo(() => new PresenceStore(), []);
  const typing = useMemo(() => new TypingStore(), []);
  const toasts = useMemo(() => new ToastStore(), []);
  const roleRef = useRef<string>('pending');
  useEffect(() => typing.setSelf(session.user.id), [typing, session.user.id]);
  useEffect(() => () => {
    typing.clear();
    toasts.clear();
  }, [typing, toasts]);

  const onMessage = useCallback(
    (msg: ServerMessage) => {
      presence.handle(msg);
      typing.handle(msg);
      // One system notification per browser: from the tab holding the socket.
      const owner = roleRef.current === 'leader' || roleRef.current === 'solo';
      handleTaskAssigned(msg, session.user, toasts, browserNotifications(), owner);
    },
    [presence, typing, toasts, session.user],
  );

  // The layout needs the three stats topics and presence; a conversation page adds its own.
  const topics = useMemo(() => topicsForPath(path), [path]);
  const { status, transport, role, reconnect, send, topicError } = useWebSocket({
    token: session.token,
    history,
    // 4403: the account was deactivated; 4401 / 401: the token is no longer good. Either way no retry.
    onUnauthorized: (why) => authStore.clear(why === 'deactivated' ? LOGOUT_REASONS.deactivated : LOGOUT_REASONS.rejected),
    onMessage,
    topics,
    viewing: path,
  });
  roleRef.current = role;

  // Typing shown for a conversation whose topic is no longer followed would never be cleared.
  const conversationId = conversationIdFromPath(path);
  useEffect(() => {
    if (conversationId === null) return;
    return () => typing.clearConversation(conversationId);
  }, [conversationId, typing]);
  useEffect(() => {
    if (status !== 'live') typing.clear();
  }, [status, typing]);

  // Log out when the token's lifetime ends (the server would also close the socket with 4401).
  useEffect(() => {
    const t = Date.parse(session.expiresAt);
    if (!Number.isFinite(t)) return;
    const ms = Math.min(Math.max(0, t - Date.now()), 2_147_483_647);
    const id = setTimeout(() => authStore.clear(LOGOUT_REASONS.expired), ms);
    return () => clearTimeout(id);
  }, [session.expiresAt]);

  const realtime = useMemo(
    () => ({ status, transport, role, reconnect, history, send, presence, typing, toasts, topicError }),
    [status, transport, role, reconnect, history, send, presence, typing, toasts, topicError],
  );

  let page;
  if (path === '/' || path === '') page = <Redirect to="/tasks" />;
  else if (path.startsWith('/tasks')) page = <TasksPage />;
  else if (path === '/overview') page = <OverviewPage />;
  else if (path.startsWith('/approvals')) page = <ApprovalsPage />;
  else if (path === '/users') page = <UsersPage />;
  else if (path === '/account') page = <AccountPage />;
  else if (conversationId !== null) page = <ConversationPage key={conversationId} id={conversationId} />;
  else if (path.startsWith('/conversations')) page = <ConversationsPage />;
  else
    page = (
      <div className="page">
        <div className="card empty">
          <h1 tabIndex={-1}>Page not found</h1>
          <p>
            <Link to="/tasks">Go to tasks</Link>
          </p>
        </div>
      </div>
    );

  return (
    <RealtimeContext.Provider value={realtime}>
      <Layout session={session} onLogout={() => authStore.clear(null)}>
        {page}
      </Layout>
    </RealtimeContext.Provider>
  );
}

function Routes({ history }: { history: StatsHistory }) {
  const session = useSession();
  const path = usePathname();

  if (path === '/login') {
    return session ? <Redirect to="/tasks" /> : <LoginPage />;
  }
  if (!session) {
    const next = path && path !== '/' ? `?next=${encodeURIComponent(path)}` : '';
    return <Redirect to={`/login${next}`} />;
  }
  return <AuthedApp key={session.token} session={session} history={history} />;
}

export function App({ client }: { client?: QueryClient }) {
  const session = useSession();
  const token = session?.token ?? null;
  // Each session starts from a clean cache and chart history (a new login, or another user).
  const queryClient = useMemo(() => client ?? createQueryClient(), [client, token]);
  const history = useMemo(() => new StatsHistory(), [token]);
  return (
    <QueryClientProvider client={queryClient}>
      <Routes history={history} />
    </QueryClientProvider>
  );
}
