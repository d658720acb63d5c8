import { allUsers } from "../users"

interface Props {
  readonly userId: number
  readonly onChange: (userId: number) => void
}

export function UserSelect({ userId, onChange }: Props) {
  return (
    <label className="user-select">
      I am
      <select data-testid="user-select" value={userId} onChange={(event) => onChange(Number(event.target.value))}>
        {allUsers.map((user) => (
          <option key={user.id} value={user.id}>
            {user.name}
          </option>
        ))}
      </select>
    </label>
  )
}
