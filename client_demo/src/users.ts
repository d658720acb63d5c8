/** The course's emoji users. Who "I" am is a choice of this browser only (localStorage). */
import { useEffect, useState } from "react"

export interface User {
  readonly id: number
  readonly name: string
}

const EMOJIS = [
  "🐶", "🐱", "🐭", "🐹", "🐰", "🦊", "🐻", "🐼", "🐨", "🐯", "🦁", "🐮", "🐷", "🐸", "🐒", "🦇",
  "🦉", "🦅", "🦆", "🐦", "🐧", "🐔", "🐺", "🐗", "🐴", "🦄", "🐝", "🐛", "🦋", "🐌", "🐜", "🐢",
]

export const allUsers: readonly User[] = EMOJIS.map((name, id) => ({ id, name }))

const STORAGE_KEY = "immer-gifts.user"

export function userName(id: number): string {
  return allUsers[id]?.name ?? `#${id}`
}

/** The current user id, remembered in localStorage; a random user on first visit. */
export function useCurrentUser(): [number, (id: number) => void] {
  const [userId, setUserId] = useState(storedUserId)
  useEffect(() => {
    storage()?.setItem(STORAGE_KEY, String(userId))
  }, [userId])
  return [userId, setUserId]
}

function storedUserId(): number {
  const stored = Number(storage()?.getItem(STORAGE_KEY) ?? Number.NaN)
  return allUsers[stored] ? stored : Math.floor(Math.random() * allUsers.length)
}

/** localStorage, or undefined where the browser denies it (e.g. in a third-party iframe). */
function storage(): Storage | undefined {
  try {
    return localStorage
  } catch {
    return undefined
  }
}
