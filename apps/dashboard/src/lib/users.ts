/**
 * User lifecycle (contract section 2): the admins' user list and changes, and everyone's own
 * password change. Not optimistic: an admin's change takes effect on other people's sessions,
 * so the page shows what the server answered.
 *
 * Reason to change: the user endpoints change. Never depends on pages or the real-time code.
 */
import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query';
import { queryKeys } from '../realtime/queryKeys';
import { api } from './api';
import type { NewUser, PasswordChange, User, UserChanges, UserList } from './apiTypes';
import { authStore, LOGOUT_REASONS } from './auth';

/** Passwords the server accepts (`NewUser.password`: 8–256 characters). */
export const PASSWORD_MIN = 8;
export const PASSWORD_MAX = 256;
/** Usernames the server accepts: 3–64 letters, digits, `.`, `_`, `-`. */
export const USERNAME_PATTERN = /^[A-Za-z0-9._-]{3,64}$/;

/** Why a password would be refused, before asking the server; null when it is fine. */
export function passwordProblem(password: string): string | null {
  if (password.length < PASSWORD_MIN) return `A password needs at least ${PASSWORD_MIN} characters.`;
  if (password.length > PASSWORD_MAX) return `A password can have at most ${PASSWORD_MAX} characters.`;
  return null;
}

export function useUsers(enabled = true) {
  return useQuery({
    queryKey: queryKeys.users,
    queryFn: ({ signal }) => api<UserList>('/api/v1/users', { signal }),
    enabled,
    refetchOnWindowFocus: false,
  });
}

/** `PATCH /api/v1/users/{id}`: the answer replaces the user in the list. */
export function useUpdateUser() {
  const qc = useQueryClient();
  return useMutation<User, Error, { id: number; changes: UserChanges }>({
    mutationFn: ({ id, changes }) => api<User>(`/api/v1/users/${id}`, { method: 'PATCH', body: changes }),
    onSuccess: (user) => {
      qc.setQueryData<UserList>(queryKeys.users, (list) =>
        list ? { ...list, items: list.items.map((u) => (u.id === user.id ? { ...u, ...user } : u)) } : list,
      );
    },
    onSettled: () => void qc.invalidateQueries({ queryKey: queryKeys.users }),
  });
}

export function useCreateUser() {
  const qc = useQueryClient();
  return useMutation<User, Error, NewUser>({
    mutationFn: (user) => api<User>('/api/v1/users', { body: user }),
    onSettled: () => void qc.invalidateQueries({ queryKey: queryKeys.users }),
  });
}

/**
 * `POST /api/v1/me/password` → 204. The change retires every older token of the user, this
 * session's too: the user signs in again with the new password (contract section 2).
 */
export function useChangeOwnPassword() {
  return useMutation<void, Error, PasswordChange>({
    mutationFn: (change) => api<void>('/api/v1/me/password', { body: change }),
    // On the mutation, not the form: it runs even if the socket's 4401 unmounted the page first.
    onSuccess: () => authStore.clear(LOGOUT_REASONS.passwordChanged),
  });
}
