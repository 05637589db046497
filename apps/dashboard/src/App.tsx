import { QueryClient, QueryClientProvider } from '@tanstack/react-query';
import { useEffect, useMemo } from 'react';
import { Layout } from './components/Layout';
import { RealtimeContext } from './components/RealtimeContext';
import { ApiError } from './lib/api';
import { authStore, useSession, type Session } from './lib/auth';
import { Link, Redirect, usePathname } from './lib/router';
import { ApprovalsPage } from './pages/ApprovalsPage';
import { ConversationsPage } from './pages/ConversationsPage';
import { LoginPage } from './pages/LoginPage';
import { TasksPage } from './pages/TasksPage';
import { StatsHistory } from './realtime/StatsHistory';
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

const EXPIRED = 'Your session has expired. Please sign in again.';

function AuthedApp({ session, history }: { session: Session; history: StatsHistory }) {
  const path = usePathname();
  const { status, role, reconnect } = useWebSocket({
    token: session.token,
    history,
    onUnauthorized: () => authStore.clear(EXPIRED),
  });

  // Log out when the token's lifetime ends (the server would also close the socket with 4401).
  useEffect(() => {
    const t = Date.parse(session.expiresAt);
    if (!Number.isFinite(t)) return;
    const ms = Math.min(Math.max(0, t - Date.now()), 2_147_483_647);
    const id = setTimeout(() => authStore.clear(EXPIRED), ms);
    return () => clearTimeout(id);
  }, [session.expiresAt]);

  const realtime = useMemo(() => ({ status, role, reconnect, history }), [status, role, reconnect, history]);

  let page;
  if (path === '/' || path === '') page = <Redirect to="/tasks" />;
  else if (path.startsWith('/tasks')) page = <TasksPage />;
  else if (path.startsWith('/approvals')) page = <ApprovalsPage />;
  else if (path.startsWith('/conversations')) page = <ConversationsPage />;
  else
    page = (
      <div className="page">
        <div className="card empty">
          <h1>Page not found</h1>
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
