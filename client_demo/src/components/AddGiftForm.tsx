import { useState } from "react"
import type { FormEvent } from "react"

interface Props {
  readonly onAdd: (description: string, image: string) => void
}

export function AddGiftForm({ onAdd }: Props) {
  const [description, setDescription] = useState("")
  const [image, setImage] = useState("")

  const submit = (event: FormEvent) => {
    event.preventDefault()
    onAdd(description.trim(), image.trim())
    setDescription("")
    setImage("")
  }

  return (
    <form className="add-gift" onSubmit={submit}>
      <input
        data-testid="gift-description"
        aria-label="Gift"
        placeholder="A gift…"
        value={description}
        onChange={(event) => setDescription(event.target.value)}
      />
      <input
        data-testid="gift-image"
        aria-label="Image URL"
        placeholder="Image URL (optional)"
        type="url"
        value={image}
        onChange={(event) => setImage(event.target.value)}
      />
      <button data-testid="add-gift" type="submit" disabled={description.trim() === ""}>
        Add
      </button>
    </form>
  )
}
